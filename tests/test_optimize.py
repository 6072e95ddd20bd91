"""Gatys optimisation with the real VGG16 on a real photo, and optimize.py as users run it."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

from helpers import AMBER, MOSAIC, PHOTOS, ROOT, compose
from stylenet.errors import StylenetError
from stylenet.training.data import load_style_image
from stylenet.training.loss import PerceptualLoss
from stylenet.training.optimize import gatys_steps, load_photo, optimize, optimize_photo

SMALL = ["size=48", "style.size=64", "steps=2"]


@pytest.fixture(scope="module")
def loss() -> PerceptualLoss:
    loss = PerceptualLoss()
    loss.set_style(load_style_image(MOSAIC, 64))
    return loss


@pytest.mark.parametrize(("method", "fraction"), [("lbfgs", 0.5), ("adam", 0.9)])
def test_optimisation_lowers_the_loss_on_a_real_photo(loss, method, fraction):
    photo = load_photo(PHOTOS[0], 64)[0]
    start, first = next(gatys_steps(loss, photo, method))
    assert torch.equal(start, photo) and first["content"] == 0  # starts from the photo itself
    image, terms = optimize(loss, photo, steps=10, method=method, progress=False)
    assert terms["total"] < fraction * first["total"]
    assert image.shape == photo.shape and image.min() >= 0 and image.max() <= 1
    with torch.no_grad():  # the terms reported are those of the image returned
        assert loss(image, photo)["total"].item() == pytest.approx(terms["total"], rel=1e-4)


def run_task(*overrides: str) -> None:
    """optimize.py's task in this process, with its Hydra config and these overrides."""
    optimize_photo(compose("optimize", list(overrides)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("content=/no/photo.jpg", "/no/photo.jpg: no such file"),
        ("method=sgd", "method must be one of lbfgs, adam, got 'sgd'"),
        ("lr=-1", "lr must be a number >= 0, got -1"),
        ("steps=ten", "steps must be an integer >= 0, got 'ten'"),
        ("output=out.xyz", "cannot write .xyz files"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, override, message):
    with pytest.raises(StylenetError, match=message.replace(".", r"\.")):
        run_task(f"content={AMBER}", f"output={tmp_path / 'out.png'}", *SMALL, override)


def test_command_line_writes_once_and_never_overwrites(tmp_path):
    output = tmp_path / "out.png"
    args = [f"content={AMBER}", "style=starry_night", f"output={output}", *SMALL]

    def run(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "optimize.py"), *args, *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    result = run()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout and "2 lbfgs steps" in result.stdout
    with Image.open(output) as image:
        assert max(image.size) == 48 and image.mode == "RGB"
    written = output.read_bytes()
    again = run()
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: {output} exists (overwrite=true to replace it)"
    assert output.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary files left
    assert run("overwrite=true").returncode == 0
