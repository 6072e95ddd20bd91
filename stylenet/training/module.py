"""The Lightning module: one feed-forward network trained against one style's perceptual loss."""

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from stylenet.errors import StylenetError
from stylenet.training.data import load_style_image
from stylenet.training.loss import PerceptualLoss


class StyleTransferModule(pl.LightningModule):
    """Trains `network` so that network(photo) has the photo's content and the style's Grams.

    Only the network is trainable and checkpointed; the VGG inside `loss` is frozen and the style
    Grams are recomputed from `style_image` when a fit starts. The checkpoint carries the whole run
    config (hyper-parameter `config`) so that export and resume need nothing else.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: PerceptualLoss,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        style_image: str,
        style_size: int = 512,
        compile_step: bool = False,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["network", "loss", "optimizer"])
        self.network = network
        self.loss = loss
        self.optimizer_factory = optimizer

    def forward(self, photos: torch.Tensor) -> torch.Tensor:
        return self.network(photos)

    def on_fit_start(self) -> None:
        style = load_style_image(self.hparams.style_image, self.hparams.style_size)
        self.loss.set_style(style.to(self.device))
        # Compiling network and loss as one function fuses the elementwise work around the
        # convolutions; the module and its checkpoints stay as they are.
        self.step_losses = torch.compile(self.losses) if self.hparams.compile_step else self.losses

    def losses(self, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms for stylizing a batch of photos."""
        return self.loss(self.network(photos), photos)

    def training_step(self, photos: torch.Tensor, batch_idx: int) -> torch.Tensor:
        losses = self.step_losses(photos)
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
        losses = self.losses(photos)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not keep the random state, yet the photo order (torch) and the crops
        # (random) of the epochs after a resume depend on it.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            torch.set_rng_state(checkpoint["rng_states"]["torch"])
            random.setstate(checkpoint["rng_states"]["python"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.network.parameters())
