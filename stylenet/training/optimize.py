"""Gatys et al. (2016): stylize one photo by optimising its pixels against the perceptual loss.

    python optimize.py content=photo.jpg style=starry_night steps=300 output=out.png

(settings: stylenet/configs/optimize.yaml, which shares the loss, style and paths groups with
training; the result is written atomically, never over an existing file unless overwrite=true).

No network and no training: the best quality for a single image, at the cost of one VGG forward
and backward pass per step. It minimises exactly the loss the feed-forward network is trained on
(same VGG, layers, relative errors and weights), which makes it the reference the quality
benchmark measures models against.
"""

import logging
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from stylenet.errors import StylenetError, check_number
from stylenet.runtime.images import load_image, save_image, saveable_format, to_image
from stylenet.training.allocator import keep_freed_memory
from stylenet.training.app import hydra_app
from stylenet.training.data import load_style_image
from stylenet.training.loss import PerceptualLoss

log = logging.getLogger(__name__)

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


def optimize_photo(cfg: DictConfig) -> None:
    """Check the settings, load the photo and the style, optimise, write cfg.output."""
    output = Path(cfg.output)  # checked before minutes of work
    if saveable_format(output.suffix) is None:
        kind = output.suffix or "extension-less"
        raise StylenetError(f"output {output}: cannot write {kind} files")
    if output.exists() and not cfg.overwrite:
        raise StylenetError(f"{output} exists (overwrite=true to replace it)")
    if cfg.size is not None:
        check_number("size", cfg.size, 32, integer=True)
    check_number("steps", cfg.steps, 0, integer=True)

    resolve_lr(cfg.method, cfg.lr)
    keep_freed_memory()  # each step reuses the last one's pages instead of faulting them in
    photo, alpha = load_photo(cfg.content, cfg.size)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    loss = instantiate(cfg.loss).to(device)
    loss.set_style(load_style_image(cfg.style.image, cfg.style.size).to(device))
    start = time.perf_counter()
    image, terms = optimize(loss, photo.to(device), cfg.steps, cfg.method, cfg.lr)
    seconds = time.perf_counter() - start
    rgb = to_rgb(image)
    save_image(to_image(rgb, alpha), output, cfg.overwrite)
    log.info(
        "wrote %s (%dx%d): style %s, %d %s steps in %.0f s; loss %.4f (content %.4f, style %.4f)",
        output,
        rgb.shape[1],
        rgb.shape[0],
        cfg.style.name,
        cfg.steps,
        cfg.method,
        seconds,
        terms["total"],
        terms["content"],
        terms["style"],
    )


main = hydra_app("optimize")(optimize_photo)

if __name__ == "__main__":
    main()
