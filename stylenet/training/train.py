"""Train a feed-forward style network: python train.py style=wave [key=value ...] (stylenet-train).

The configuration lives in stylenet/configs/ (train.yaml composes the groups); README: Training.
"""

import hashlib
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from stylenet.errors import StylenetError
from stylenet.training.app import check_settings, choices, hydra_app, one_line_errors
from stylenet.training.paths import CONFIG_DIR
from stylenet.training.warm_start import (
    TRAINABLE,
    parent_path,
    parent_weights,
    record,
    train_only_norms,
)

if TYPE_CHECKING:
    from stylenet.training.data import PhotoDataModule
    from stylenet.training.export import Checkpoint
    from stylenet.training.loss import PerceptualLoss

log = logging.getLogger(__name__)
# Lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every fit.
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)


def train(cfg: DictConfig) -> None:
    """One instantiate per config group, then Lightning does the rest."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ProgressBar
    from tqdm.contrib.logging import logging_redirect_tqdm

    from stylenet.training.allocator import keep_freed_memory
    from stylenet.training.export import load_checkpoint
    from stylenet.training.module import StyleTransferModule

    keep_freed_memory()  # ~25% of a CPU step went to page faults; see allocator.py
    log.info("run folder: %s", cfg.paths.output_dir)
    datamodule, loss = check_inputs(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    parent = load_checkpoint(parent_path(cfg.init_from)) if cfg.init_from else None
    module = StyleTransferModule(
        network=initial_network(cfg, parent),
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        style_images=[style.image for style in style_configs(cfg)],
        style_size=cfg.style.size,
        compile_step=cfg.compile,
        config=run_config(cfg, parent),
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it won't show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=[instantiate(c) for c in cfg.logger.values()]
    )
    check_hardware(cfg, trainer)
    with logging_redirect_tqdm():  # log lines above the progress bar, not through it
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if skipped := datamodule.num_skipped():
        log.warning("skipped %d unreadable image(s); see the warnings above", skipped)
    log.info("run folder: %s", cfg.paths.output_dir)


def check_hardware(cfg: DictConfig, trainer: Any) -> None:
    """Refuse or warn about what this trainer on this machine would do badly: compiled bf16 on a
    CPU (NaNs), bf16 emulated without bf16 units (~40x slower), a CPU run on the default step
    count (sized for a GPU: a day or more)."""
    from pytorch_lightning.accelerators import CPUAccelerator

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
    if isinstance(trainer.accelerator, CPUAccelerator) and not max_steps_chosen():
        log.warning(
            "no trainer.max_steps given: this CPU run is set for %d steps (the default, sized for "
            "a GPU), which at the default sizes takes a day or more; set trainer.max_steps=N for "
            "a shorter run, or try experiment=cpu_fast (the time it takes is logged after the "
            "first steps)",
            trainer.max_steps,
        )


def check_inputs(cfg: DictConfig) -> tuple["PhotoDataModule", "PerceptualLoss"]:
    """Find the user's mistakes in seconds, before Lightning starts and, called by Hydra
    (CheckInputs), before the run folder is written: a key or value a constructor does not take,
    a missing checkpoint, VGG weights file, style image or photo folder, a style image that is
    not an image, a bad loss or network setting. Returns what it built for train() to use: the
    data module, set up (its photos found), and the loss (VGG loaded)."""
    from hydra.utils import instantiate

    from stylenet.training.data import load_style_image

    check_settings(cfg)
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise StylenetError(f"ckpt_path not found: {cfg.ckpt_path}")
    check_schedule(cfg)
    if cfg.init_from:
        parent_path(cfg.init_from)
    styles = style_configs(cfg)
    for style in styles:
        load_style_image(style.image, cfg.style.size)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    loss = instantiate(cfg.loss)
    if len(loss.style_weights) not in (1, len(styles)):
        raise StylenetError(
            f"loss.style_weight: one weight, or one per style ({len(styles)}), not "
            f"{len(loss.style_weights)}"
        )
    initial_network(cfg)  # its own checks; train() builds the one it trains once seeded
    return datamodule, loss


def check_schedule(cfg: DictConfig) -> None:
    """A learning-rate schedule is laid over trainer.max_steps (scheduler=finish drops the rate at
    three quarters of it): a run without a step limit would never reach its milestones. And a
    resumed run keeps the schedule it was trained with: a schedule added on resume would count
    its milestones from the resumed step, one removed would leave the rate where it was."""
    from stylenet.training.export import load_checkpoint

    if cfg.get("scheduler") is not None and cfg.trainer.max_steps < 1:
        raise StylenetError(
            f"scheduler is laid over trainer.max_steps: set it (got {cfg.trainer.max_steps})"
        )
    if not cfg.ckpt_path:
        return
    trained = (load_checkpoint(cfg.ckpt_path).config.get("scheduler") or {}).get("_target_")
    wanted = (cfg.get("scheduler") or {}).get("_target_")
    if trained != wanted:
        raise StylenetError(
            f"ckpt_path was trained with scheduler {trained or 'null'}, not {wanted or 'null'}: "
            "resume it with its own, or start from its weights with init_from="
        )


class CheckInputs(Callback):
    """Hydra callback: check_inputs() before Hydra writes .hydra/ and train.log into the run
    folder, so that a mistake leaves nothing behind. Exits itself: Hydra turns a callback's
    exceptions into warnings and goes on."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A bug is re-raised: Hydra warns, and train() meets it again with its traceback.
        with one_line_errors():
            check_inputs(config)


def style_configs(cfg: DictConfig) -> list[DictConfig]:
    """The styles a run trains: `style`; or, with `styles`, each of its entries (the name of a
    configs/style file, or an image's path), with `style.size` for all."""
    if not cfg.styles:
        return [cfg.style]
    defaults = OmegaConf.load(CONFIG_DIR / "style_defaults.yaml")
    found = []
    for entry in cfg.styles:
        file = CONFIG_DIR / "style" / f"{entry}.yaml"
        if file.is_file():
            chosen = OmegaConf.load(file)
        elif Path(str(entry)).expanduser().is_file():
            chosen = OmegaConf.create({"style": {"image": str(Path(str(entry)).expanduser())}})
        else:
            raise StylenetError(
                f"styles: {entry!r} is neither a style ({', '.join(choices('style'))}) nor an "
                "image file"
            )
        root = OmegaConf.merge({"paths": cfg.paths}, defaults, chosen)
        root.style.size = cfg.style.size
        found.append(root.style)
    names = [style.name for style in found]
    if len(set(names)) < len(names):
        raise StylenetError(f"styles: each style once, got {', '.join(names)}")
    return found


def initial_network(cfg: DictConfig, parent: "Checkpoint | None" = None) -> Any:
    """The network to train: cfg.network, with a style per entry of `styles`, and the weights of
    `parent`, the checkpoint that `init_from` names (warm start: a painting learned from another
    painting's network, whose photo-reconstruction part carries over), of which only the norms
    train with `trainable=norms`."""
    from hydra.utils import instantiate

    if cfg.trainable not in TRAINABLE:
        raise StylenetError(f"trainable: one of {', '.join(TRAINABLE)}, not {cfg.trainable!r}")
    if cfg.trainable == "norms" and not cfg.init_from:
        raise StylenetError("trainable=norms trains on another network's convolutions: init_from=")
    network = instantiate(cfg.network, **({"styles": len(cfg.styles)} if cfg.styles else {}))
    if cfg.trainable == "norms":
        train_only_norms(network)
    if parent is not None:
        try:
            network.load_state_dict(parent_weights(parent, network.styles))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise StylenetError(
                f"init_from {cfg.init_from}: another network shape ({first})"
            ) from None
    return network


def max_steps_chosen() -> bool:
    """Whether trainer.max_steps was set on the command line or by an experiment recipe, rather
    than left at the default; True outside a Hydra run (a test, a notebook)."""
    if not HydraConfig.initialized():
        return True
    hydra = HydraConfig.get()
    keys = {o.split("=", 1)[0].lstrip("+~") for o in hydra.overrides.task}
    return "trainer.max_steps" in keys or hydra.runtime.choices.get("experiment") is not None


def bf16_on_cpu(trainer) -> bool:
    """Whether the Lightning `trainer` runs bf16 on a CPU."""
    from pytorch_lightning.accelerators import CPUAccelerator

    return isinstance(trainer.accelerator, CPUAccelerator) and "bf16" in str(trainer.precision)


def cpu_has_bf16_units() -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16: bf16 matrix products in hardware."""
    import torch

    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def run_config(cfg: DictConfig, parent: "Checkpoint | None" = None) -> dict:
    """The resolved config that checkpoints carry, with the style images' checksums added so an
    exported model names the exact paintings even where the files are gone (several styles: the
    list `styles` of their resolved configs), the command line that
    made the run, and what `parent` (the `init_from` checkpoint) was (for model cards)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.styles:
        config["styles"] = [OmegaConf.to_container(s, resolve=True) for s in style_configs(cfg)]
        config["network"]["styles"] = len(config["styles"])  # what export rebuilds
    for style in config["styles"] if cfg.styles else [config["style"]]:
        image = Path(style["image"])
        if not image.is_file():
            raise StylenetError(f"style image not found: {image}")
        style["sha256"] = hashlib.sha256(image.read_bytes()).hexdigest()
    # What reproduces the model: where the run folder was and what it resumed from do not, and
    # files (photos, a warm start's checkpoint) go by their names: no path of this machine.
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    kept = [_portable(o) for o in overrides if not o.startswith(("ckpt_path=", "hydra."))]
    if parent is not None:
        config["warm_start"] = record(parent, cfg.init_from)
    config["command"] = " ".join(["python train.py", *kept])
    return config


def _portable(override: str) -> str:
    """A command-line override with an absolute path cut to its last part (export.portable)."""
    from stylenet.training.export import portable

    key, sep, value = override.partition("=")
    return f"{key}={portable(value)}" if sep else override


main = hydra_app("train")(train)

if __name__ == "__main__":
    main()
