"""Train a feed-forward style network: python train.py style=wave [key=value ...] (stylenet-train).

The configuration lives in stylenet/configs/ (train.yaml composes the groups); README: Training.
"""

import hashlib
import logging
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from stylenet.errors import StylenetError
from stylenet.training.app import hydra_app

log = logging.getLogger(__name__)
# Lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every fit.
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)


def train(cfg: DictConfig) -> None:
    """One instantiate per config group, then Lightning does the rest."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from stylenet.training.allocator import keep_freed_memory
    from stylenet.training.module import StyleTransferModule

    keep_freed_memory()  # ~25% of a CPU step went to page faults; see allocator.py
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise StylenetError(f"ckpt_path not found: {cfg.ckpt_path}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    module = StyleTransferModule(
        network=instantiate(cfg.network),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        style_image=cfg.style.image,
        style_size=cfg.style.size,
        compile_step=cfg.compile,
        config=run_config(cfg),
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()],
        logger=[instantiate(c) for c in cfg.logger.values()],
    )
    if bf16_on_cpu(trainer):
        if cfg.compile:  # measured with torch 2.14: the loss was NaN from the second step on
            raise StylenetError(
                "compile=true with bf16 on a CPU trains NaNs (torch.compile's bf16 backward): "
                "use compile=false with trainer=cpu_bf16"
            )
        if not cpu_has_bf16_units():
            log.warning(
                "bf16 on a CPU without bf16 units (AMX or AVX512-BF16) is emulated, about 40x "
                "slower than fp32: use trainer.precision=32-true"
            )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if skipped := datamodule.num_skipped():
        log.warning("skipped %d unreadable image(s); see the warnings above", skipped)
    log.info("run folder: %s", cfg.paths.output_dir)


def bf16_on_cpu(trainer) -> bool:
    """Whether the Lightning `trainer` runs bf16 on a CPU."""
    from pytorch_lightning.accelerators import CPUAccelerator

    return isinstance(trainer.accelerator, CPUAccelerator) and "bf16" in str(trainer.precision)


def cpu_has_bf16_units() -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16: bf16 matrix products in hardware."""
    import torch

    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def run_config(cfg: DictConfig) -> dict:
    """The resolved config that checkpoints carry, with the style image's checksum added so an
    exported model names the exact painting even where the file is gone, and the command line
    that made the run (for model cards)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    image = Path(cfg.style.image)
    if not image.is_file():
        raise StylenetError(f"style.image not found: {image}")
    config["style"]["sha256"] = hashlib.sha256(image.read_bytes()).hexdigest()
    # What reproduces the model: where the run folder was and what it resumed from do not.
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra."))]
    config["command"] = " ".join(["python train.py", *kept])
    return config


main = hydra_app("train")(train)

if __name__ == "__main__":
    main()
