"""Stylize one photo by pixel optimisation (Gatys et al. 2016), the quality reference for models:

    python optimize.py content=photo.jpg style=starry_night steps=300 output=out.png

The settings live in configs/optimize.yaml, which shares the loss, style and paths groups with
train.py. The result is written atomically, and never over an existing file unless overwrite=true.
"""

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from stylenet.app import hydra_app
from stylenet.errors import StylenetError, check_number
from stylenet.images import saveable_format

log = logging.getLogger(__name__)


def optimize_photo(cfg: DictConfig) -> None:
    """Check the settings, load the photo and the style, optimise, write cfg.output."""
    output = Path(cfg.output)  # checked before importing torch, and before minutes of work
    if saveable_format(output.suffix) is None:
        kind = output.suffix or "extension-less"
        raise StylenetError(f"output {output}: cannot write {kind} files")
    if output.exists() and not cfg.overwrite:
        raise StylenetError(f"{output} exists (overwrite=true to replace it)")
    if cfg.size is not None:
        check_number("size", cfg.size, 32, integer=True)
    check_number("steps", cfg.steps, 0, integer=True)

    import torch
    from hydra.utils import instantiate

    from stylenet.allocator import keep_freed_memory
    from stylenet.data import load_style_image
    from stylenet.images import save_image, to_image
    from stylenet.optimize import load_photo, optimize, resolve_lr, to_rgb

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
