"""The styles that ship in the package: public-domain paintings, complete cards, real results."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import PHOTOS
from stylenet.runtime.styles import DEFAULT_STYLE, bundled_styles
from stylenet.runtime.stylizer import Stylizer

# The paintings in the shared data that are in the public domain: the only ones that may ship.
PUBLIC_DOMAIN = {
    "starry_night",
    "the_scream",
    "wave",
    "composition_vii",
    "the_shipwreck_of_the_minotaur",
    "udnie",
}
CARD_KEYS = (
    "style_painting",
    "style_artist",
    "style_year",
    "training_command",
    "training_steps",
    "training_image_size",
    "training_time",
)


def test_the_default_style_ships_and_only_public_domain_paintings_do():
    names = set(bundled_styles())
    assert DEFAULT_STYLE in names
    assert names <= PUBLIC_DOMAIN


@pytest.mark.parametrize("name", sorted(bundled_styles()))
def test_a_bundled_style_has_its_card_and_paints_a_real_photo(name: str):
    stylizer = Stylizer(name, threads=1)
    meta = stylizer.metadata
    assert meta["style_name"] == name and meta["style_licence"] == "public domain"
    assert all(meta.get(key) not in (None, "", "unknown") for key in CARD_KEYS), meta
    assert meta["training_command"].startswith("python train.py style=")
    quality = json.loads(meta["quality"])
    assert {"style", "content", "layers", "ms_1080", "reference"} <= quality.keys()
    assert stylizer.tile_for(10_000, 10_000) is not None  # tileable: big photos stay in memory
    photo = Image.open(PHOTOS[0]).convert("RGB")
    painted = stylizer.stylize(PHOTOS[0])
    assert painted.size == photo.size
    difference = np.abs(np.asarray(painted, float) - np.asarray(photo, float)).mean()
    assert difference > 20  # a painting, not a tinted photo (on 0..255)


def test_the_default_style_runs_without_torch(tmp_path):
    """As a base install runs it: no torch anywhere in the process."""
    script = (
        "import sys\n"
        "from stylenet import Stylizer\n"
        f"Stylizer().stylize({str(PHOTOS[0])!r}).save({str(tmp_path / 'out.png')!r})\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert Image.open(tmp_path / "out.png").size == Image.open(PHOTOS[0]).size
