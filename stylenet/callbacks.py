"""Side jobs of a training run, kept out of the module: checkpoints and sample grids."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


class Checkpoints(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus last.ckpt of the final step when training ends.

    Lightning writes last.ckpt at the end only if it never wrote one: a run of 2500 steps with
    checkpoints every 1000 would otherwise end with last.ckpt at step 2000.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class SampleGrid(pl.Callback):
    """Every `every_n_steps` and at the end of training, stylize a fixed set of validation photos.

    The grid (photos on top, stylized below) is saved as `samples/step_XXXXXX.png` in the run folder
    and logged to TensorBoard. Only rank 0 does it.
    """

    def __init__(self, every_n_steps: int = 500, num_photos: int = 4):
        self.every_n_steps = every_n_steps
        self.num_photos = num_photos
        self.photos: torch.Tensor | None = None
        self.last_step = -1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.photos = trainer.datamodule.sample_photos(self.num_photos)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer, pl_module)

    @rank_zero_only
    @torch.no_grad()
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self.last_step:
            return
        self.last_step = step
        was_training = pl_module.training
        pl_module.eval()
        stylized = pl_module(self.photos.to(pl_module.device)).float().clamp(0, 1).cpu()
        pl_module.train(was_training)
        grid = make_grid(torch.cat([self.photos, stylized]), nrow=len(self.photos), padding=4)
        path = Path(trainer.default_root_dir) / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, step)
