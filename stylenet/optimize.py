"""Gatys et al. (2016): stylize one photo by optimising its pixels against the perceptual loss.

No network and no training: the best quality for a single image, at the cost of one VGG forward
and backward pass per step. It minimises exactly the loss the feed-forward network is trained on
(same VGG, layers, relative errors and weights), which makes it the reference the quality
benchmark measures models against.
"""

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stylenet.errors import StylenetError, check_number
from stylenet.images import load_image
from stylenet.loss import PerceptualLoss

# Pixels are in [0, 1]: L-BFGS takes unit steps along its quasi-Newton direction; Adam moves each
# pixel by about `lr` per step, so 0.02 is ~5 grey levels.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


def load_photo(path: str | Path, max_size: int | None) -> tuple[torch.Tensor, np.ndarray | None]:
    """A photo as a (1, 3, H, W) tensor in [0, 1], longer side at most `max_size`, and its alpha.

    Read as the runtime reads photos (EXIF orientation, ICC, 16-bit), so that optimisation and a
    model see the same pixels; StylenetError names the file.
    """
    try:
        pixels = load_image(path, max_size)
    except StylenetError as e:
        raise StylenetError(f"{path}: {e}") from None
    return torch.from_numpy(pixels.rgb.copy()).permute(2, 0, 1)[None].float().div(255), pixels.alpha


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """The first image of a (B, 3, H, W) batch in [0, 1] as uint8 HxWx3, rounded."""
    return (image[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(
        np.uint8
    )


def resolve_lr(method: str, lr: float | None) -> float:
    """The learning rate for `method` (its default when None); one-line errors for bad values."""
    if method not in DEFAULT_LR:
        raise StylenetError(f"method must be one of {', '.join(DEFAULT_LR)}, got {method!r}")
    lr = DEFAULT_LR[method] if lr is None else lr
    check_number("lr", lr, 0)
    return lr


def make_optimizer(image: torch.Tensor, method: str, lr: float | None) -> torch.optim.Optimizer:
    """One update per step: L-BFGS with one loss evaluation per step (no line search), or Adam."""
    lr = resolve_lr(method, lr)
    if method == "lbfgs":
        return torch.optim.LBFGS([image], lr=lr, max_iter=1, history_size=50)
    return torch.optim.Adam([image], lr=lr)


def gatys_steps(
    loss: PerceptualLoss, content: torch.Tensor, method: str = "lbfgs", lr: float | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
    """Yield (image, loss terms) after 0, 1, 2, ... updates, starting from the photo; endless.

    `content` is (1, 3, H, W) in [0, 1] on the loss's device and `loss.set_style` has been called.
    Each step costs one VGG forward and backward pass. The loss sees the pixels clamped to [0, 1]:
    one fixed objective. Clamping them in place after each update instead feeds L-BFGS curvature
    pairs that do not match the steps taken; measured, its loss then rises again after ~100 steps.
    """
    pixels = content.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    optimizer = make_optimizer(pixels, method, lr)
    while True:
        optimizer.zero_grad()
        image = pixels.clamp(0.0, 1.0)
        terms = loss(image, content)
        terms["total"].backward()
        yield image.detach(), {name: float(value.detach()) for name, value in terms.items()}
        # The closure hands over the loss just computed: its gradient is already in pixels.grad.
        optimizer.step(lambda terms=terms: terms["total"])


def optimize(
    loss: PerceptualLoss,
    content: torch.Tensor,
    steps: int,
    method: str = "lbfgs",
    lr: float | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The photo after `steps` updates and its loss terms, with a progress bar showing the loss."""
    check_number("steps", steps, 0, integer=True)
    resolve_lr(method, lr)  # a typo fails here, not after the progress bar has started
    with tqdm(total=steps, desc=f"Gatys {method}", unit="step", disable=not progress) as bar:
        for done, last in enumerate(islice(gatys_steps(loss, content, method, lr), steps + 1)):
            bar.set_postfix(loss=f"{last[1]['total']:.4f}", refresh=False)
            bar.update(min(done, 1))  # the first image is the photo itself: no step yet
    return last
