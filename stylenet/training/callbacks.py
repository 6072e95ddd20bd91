"""Side jobs of a training run, kept out of the module: checkpoints, sample grids, the clock, the
progress bar and the time estimate."""

import logging
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


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

    The grid (photos on top, stylized below, a row per style) is saved as
    `samples/step_XXXXXX.png` in the run folder and logged to TensorBoard. Only rank 0 does it.
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
        photos = self.photos.to(pl_module.device)
        styles = range(len(pl_module.style_names))  # a row per style
        stylized = torch.cat([pl_module(photos, style) for style in styles]).float().clamp(0, 1)
        pl_module.train(was_training)
        grid = make_grid(torch.cat([self.photos, stylized.cpu()]), nrow=len(self.photos), padding=4)
        path = Path(trainer.default_root_dir) / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, step)


class StepProgressBar(TQDMProgressBar):
    """Lightning's progress bar counting training steps out of trainer.max_steps, across epochs.

    A run is sized in steps: Lightning's own bar restarts every epoch ("Epoch 4: 8/8") and its
    time left covers that epoch only. This one reads "step: 12%|█ | 4800/40000 [1:02:03<7:34:12,
    1.29s/step, total=2.31, style=1.02, content=1.29]".
    """

    # Lightning's format with tqdm's rate_fmt, which turns to s/step below one step a second.
    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        # A resumed run starts where it stopped; the rate and time left count this session only.
        bar.initial = bar.n = bar.last_print_n = trainer.global_step
        bar.set_description("step")

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """One bar for the whole run: nothing restarts with an epoch."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.update(trainer.global_step - bar.n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The training losses, short ("total", not "train/total"), without the logger's version."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {key.removeprefix("train/"): value for key, value in metrics.items()}


class TimeEstimate(pl.Callback):
    """After the first `after_steps` steps, log how long the run will take at that pace.

    A CPU step takes seconds where a GPU's takes milliseconds, and trainer.max_steps is one number
    for both: the user learns within minutes that a run would take days, not the next morning.
    Timing starts after the first step, which pays for start-up (and compilation).
    """

    def __init__(self, after_steps: int = 10):
        self.after_steps = after_steps
        self.first_step = 0
        self.started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.first_step, self.started = trainer.global_step, None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if self.started is None:
            self.started = time.monotonic()
        elif trainer.global_step == self.first_step + 1 + self.after_steps:
            self.report(trainer, (time.monotonic() - self.started) / self.after_steps)

    @rank_zero_only
    def report(self, trainer: pl.Trainer, seconds_per_step: float) -> None:
        if trainer.max_steps > 0:
            steps = trainer.max_steps - self.first_step
            log.info(
                "%d steps at %.3g s/step: about %s; set trainer.max_steps=N to change that",
                steps,
                seconds_per_step,
                duration(steps * seconds_per_step),
            )


def duration(seconds: float) -> str:
    """A rough time in the unit that reads best: "57 h", "25 min", "40 s"."""
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


class TrainingClock(pl.Callback):
    """Training wall time per machine, kept in the checkpoints across resumes, for model cards.

    A style may be trained over several sessions and machines; the exported model says how long
    it took on what (`training_time` in its metadata). Validation and sample grids count too:
    this is the time a user would wait for the same run.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started: float | None = None
        self.machine = ""  # what this run trains on, a key of `seconds`

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.machine = machine(trainer)
        self.started = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tick()

    def state_dict(self) -> dict[str, Any]:
        # Lightning collects callback states before it calls on_save_checkpoint: the time up to
        # this checkpoint must be counted here, or each checkpoint lacks its last interval.
        self._tick()
        return {"seconds": dict(self.seconds)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = dict(state_dict["seconds"])

    def _tick(self) -> None:
        if self.started is None:
            return
        now = time.monotonic()
        self.seconds[self.machine] = self.seconds.get(self.machine, 0.0) + now - self.started
        self.started = now


def machine(trainer: pl.Trainer) -> str:
    """What a run ran on, in words: "NVIDIA H200", "2 x NVIDIA H200", "<CPU model> (2 threads)"."""
    if isinstance(trainer.accelerator, pl.accelerators.CUDAAccelerator):
        device = torch.cuda.get_device_name()
    else:
        threads = torch.get_num_threads()
        device = f"{cpu_name()} ({threads} thread{'s' if threads > 1 else ''})"
    return device if trainer.world_size == 1 else f"{trainer.world_size} x {device}"


def cpu_name() -> str:
    """The CPU model ("Intel(R) Xeon(R) Processor"), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
