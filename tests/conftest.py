"""Shared fixtures: real VGG16 weights and photos from ../shared, and a composed train config."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VGG_WEIGHTS = SHARED / "weights" / "vgg16-imagenet-features.pth"
PHOTOS = SHARED / "data" / "photos"
STYLES = SHARED / "data" / "styles"

# Every test that builds a PerceptualLoss uses the genuine ImageNet VGG16 (never random weights).
assert VGG_WEIGHTS.is_file(), f"tests need the real VGG16 weights at {VGG_WEIGHTS}"
os.environ["STYLENET_VGG_WEIGHTS"] = str(VGG_WEIGHTS)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Eight real training photos in a folder of their own (copies: CI's ../shared is read-only)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((PHOTOS / "train").glob("*.jpg"))[:8]:
        shutil.copy(path, folder / path.name)
    return folder


# Overrides that shrink a training run to a few seconds on a CPU.
SMALL = [
    "data.image_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    f"data.val_root={PHOTOS / 'val'}",
    "style.size=128",
    "network.width=8",
    "network.num_res_blocks=1",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
]


def compose_train(run_dir: Path, *overrides: str):
    """The real configs/train.yaml, shrunk for a CPU test, with its run folder at `run_dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import train  # noqa: F401  registers the config resolvers

    in_process = [
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "callbacks.sample_grid.every_n_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        overrides = [*SMALL, *in_process, *overrides]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        del cfg["hydra"]
    return cfg
