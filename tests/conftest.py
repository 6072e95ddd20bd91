"""Fixtures: real photos and VGG16 weights from the shared data, and one small exported model."""

import os
import shutil
from pathlib import Path

import pytest

from helpers import PHOTO_DIR, VGG_WEIGHTS, exported_model
from stylenet.runtime import styles
from stylenet.runtime.styles import DEFAULT_STYLE

# Every test that builds a PerceptualLoss uses the genuine ImageNet VGG16 (never random weights).
assert VGG_WEIGHTS.is_file(), f"tests need the real VGG16 weights at {VGG_WEIGHTS}"
os.environ["STYLENET_VGG_WEIGHTS"] = str(VGG_WEIGHTS)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Eight real training photos in a folder of their own (copies: shared data is read-only)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((PHOTO_DIR / "train").glob("*.jpg"))[:8]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight model exported by export.py, once per test session."""
    return exported_model(tmp_path_factory.getbasetemp())


@pytest.fixture
def bundled(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's bundled styles replaced by two copies of the test model."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    for name in (DEFAULT_STYLE, "wave"):
        shutil.copy(model, folder / f"{name}.onnx")
    monkeypatch.setattr(styles, "MODELS_DIR", folder)
    return folder
