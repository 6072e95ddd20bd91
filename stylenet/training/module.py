"""The Lightning module: one feed-forward network trained against one style's perceptual loss, or
several styles' in turn."""

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from stylenet.errors import StylenetError
from stylenet.training.data import load_style_image
from stylenet.training.loss import PerceptualLoss


class StyleTransferModule(pl.LightningModule):
    """Trains `network` so that network(photo) has the photo's content and the style's Grams.

    Only the network is trainable and checkpointed; the VGG inside `loss` is frozen and the style
    Grams are recomputed from `style_images` when a fit starts. The checkpoint carries the whole
    run config (hyper-parameter `config`) so that export and resume need nothing else.

    With several `style_images` the network holds one style each (`TransformerNet.styled`) and
    the steps take them in turn, one style a batch: step k trains style k mod n, which a resumed
    run continues exactly.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: PerceptualLoss,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        style_images: Sequence[str],
        style_size: int = 512,
        compile_step: bool = False,
        config: dict[str, Any] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], LRScheduler] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["network", "loss", "optimizer", "scheduler"])
        self.network = network
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    @property
    def style_names(self) -> list[str]:
        """The styles' names (their images' stems), in the network's order."""
        return [Path(image).stem for image in self.hparams.style_images]

    def forward(self, photos: torch.Tensor, style: int = 0) -> torch.Tensor:
        """The photos in style number `style`."""
        count = len(self.hparams.style_images)
        weights = None
        if count > 1:
            weights = F.one_hot(torch.tensor([style]), count).float().to(photos.device)
        with self.network.styled(weights):
            return self.network(photos)

    def on_fit_start(self) -> None:
        for index, image in enumerate(self.hparams.style_images):
            style = load_style_image(image, self.hparams.style_size)
            self.loss.set_style(style.to(self.device), index)
        # Compiling network and loss as one function fuses the elementwise work around the
        # convolutions; the module and its checkpoints stay as they are.
        self.step_losses = torch.compile(self.losses) if self.hparams.compile_step else self.losses

    def losses(self, photos: torch.Tensor, style: int = 0) -> dict[str, torch.Tensor]:
        """The loss terms for stylizing a batch of photos in style number `style`."""
        return self.loss(self(photos, style), photos, style)

    def training_step(self, photos: torch.Tensor, batch_idx: int) -> torch.Tensor:
        losses = self.step_losses(photos, self.global_step % len(self.hparams.style_images))
        total = losses["total"]
        if not torch.isfinite(total):
            raise StylenetError(
                f"loss became {total.item()} at step {self.global_step}: the learning rate or the "
                "loss weights are too high (lower optimizer.lr or loss.style_weight), or bf16 "
                "overflowed (try trainer.precision=32-true); checkpoints of the good steps are kept"
            )
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)
        return total

    def validation_step(self, photos: torch.Tensor, batch_idx: int) -> None:
        """val/total, ... for one style; val/<style>/total, ... for each of several."""
        names = self.style_names
        for style, name in enumerate(names):
            prefix = "val/" if len(names) == 1 else f"val/{name}/"
            losses = self.losses(photos, style)
            self.log_dict({f"{prefix}{k}": v for k, v in losses.items()}, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not keep the random state, yet the photo order (torch) and the crops
        # (random) of the epochs after a resume depend on it.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            torch.set_rng_state(checkpoint["rng_states"]["torch"])
            random.setstate(checkpoint["rng_states"]["python"])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        # All of it, or only the norms' scales and shifts (trainable=norms: the rest is frozen).
        optimizer = self.optimizer_factory(p for p in self.network.parameters() if p.requires_grad)
        if self.scheduler_factory is None:
            return optimizer
        # Stepped every training step: milestones are step counts, like trainer.max_steps.
        scheduler = {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
