"""Train a feed-forward style network: python train.py style=mosaic [key=value ...].

The configuration lives in configs/ (train.yaml composes the groups); see the README for a tour.
"""

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stylenet.errors import StylenetError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))
OmegaConf.register_new_resolver("stem", lambda path: Path(path).stem, replace=True)
log = logging.getLogger(__name__)
# Lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every fit.
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)


def train(cfg: DictConfig) -> None:
    """One instantiate per config group, then Lightning does the rest."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from stylenet.module import StyleTransferModule

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
        config=run_config(cfg),
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()],
        logger=[instantiate(c) for c in cfg.logger.values()],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if skipped := datamodule.num_skipped():
        log.warning("skipped %d unreadable image(s); see the warnings above", skipped)
    log.info("run folder: %s", cfg.paths.output_dir)


def run_config(cfg: DictConfig) -> dict:
    """The resolved config that checkpoints carry, with the style image's checksum added so an
    exported model names the exact painting even where the file is gone."""
    config = OmegaConf.to_container(cfg, resolve=True)
    image = Path(cfg.style.image)
    if not image.is_file():
        raise StylenetError(f"style.image not found: {image}")
    config["style"]["sha256"] = hashlib.sha256(image.read_bytes()).hexdigest()
    return config


def user_error(e: BaseException) -> str | None:
    """The one-line message for a configuration or input mistake, None for a real bug."""
    while e is not None:  # Hydra wraps errors from constructors in InstantiationException
        if isinstance(e, StylenetError):
            return str(e)
        if isinstance(e, OmegaConfBaseException):
            return str(e).strip().splitlines()[0] + (f" (key: {e.full_key})" if e.full_key else "")
        e = e.__cause__
    return None


def unknown_choice(args: list[str]) -> str | None:
    """One line for `group=option` arguments (sweeps too) naming a config that does not exist.

    Hydra would say it in a dozen lines; `style=` is the one users mistype most.
    """
    for arg in args:
        key, sep, value = arg.partition("=")
        group = CONFIG_DIR / key.lstrip("+~")
        if not sep or "." in key or not group.is_dir():
            continue
        for option in value.split(","):
            if not (group / f"{option}.yaml").is_file():
                choices = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
                extra = " (or style.image=PATH for any image)" if key == "style" else ""
                return f"unknown {key} '{option}'; choose from: {choices}{extra}"
    return None


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if message := unknown_choice(sys.argv[1:]):
        sys.exit(f"error: {message}")
    main()
