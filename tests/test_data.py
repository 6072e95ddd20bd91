import shutil
import warnings

import numpy as np
import pytest
import torch

from helpers import PHOTO_DIR, messy_inputs
from stylenet.errors import StylenetError
from stylenet.runtime.images import find_images
from stylenet.training.data import PhotoDataModule, PhotoDataset, load_scaled, load_style_image


def _with_bad_files(folder):
    real = sorted(folder.glob("*.jpg"))[0].read_bytes()
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "truncated.JPG").write_bytes(real[: len(real) // 3])
    (folder / "empty.png").write_bytes(b"")
    return 3


def test_find_images_recurses_and_ignores_case(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.JPG", "a/b/y.webp", "z.Png", "w.bmp", "v.jpeg", "notes.txt", "a/b/c.gif"]:
        (tmp_path / name).write_bytes(b"")
    names = [p.name for p in find_images(tmp_path)]
    assert sorted(names) == ["c.gif", "v.jpeg", "w.bmp", "x.JPG", "y.webp", "z.Png"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["v.jpeg", "w.bmp", "z.Png"]


def test_training_photos_are_read_as_the_runtime_reads_them(tmp_path):
    """EXIF orientation applied (a camera's portrait photo trains as a portrait), 16-bit scaled."""
    files = messy_inputs(tmp_path)
    assert load_scaled(files["rotated"], 40).size == (40, 60)  # stored 60x40, displayed 40x60
    grey = np.asarray(load_scaled(files["gray16"], 32))
    assert grey.min() < 10 and grey.max() > 245  # a ramp, not clipped to white


def test_corrupt_images_are_skipped_once_each(photo_folder):
    n_bad = _with_bad_files(photo_folder)
    files = find_images(photo_folder)
    dataset = PhotoDataset(files, image_size=64, train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [dataset[i] for i in range(len(dataset))] + [
            dataset[i] for i in range(len(dataset))
        ]
    assert all(b.shape == (3, 64, 64) for b in batches)
    skipped = [str(w.message) for w in caught if "skipping unreadable image" in str(w.message)]
    assert len(skipped) == n_bad  # once each, although every file was asked for twice
    assert dataset.num_bad == n_bad
    assert {"corrupt.jpg", "truncated.JPG", "empty.png"} == {
        s.split(":")[0].rsplit("/", 1)[1] for s in skipped
    }


def test_crops_are_the_requested_size_and_in_range():
    files = find_images(PHOTO_DIR / "val")[:3]
    for train in (True, False):
        x = torch.stack([PhotoDataset(files, 96, train)[i] for i in range(3)])
        assert x.shape == (3, 3, 96, 96) and x.min() >= 0 and x.max() <= 1


def test_validation_held_out_from_root(photo_folder):
    dm = PhotoDataModule(str(photo_folder), val_fraction=0.25, image_size=64, batch_size=2)
    dm.setup()
    train, val = set(dm.train_set.files), set(dm.val_set.files)
    assert len(val) == 2 and len(train) == 6 and not train & val


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": ""}, "data.root is missing"),
        ({"root": "/nonexistent/photos"}, "data.root folder not found: /nonexistent/photos"),
        ({"image_size": 16}, "data.image_size must be an integer >= 32, got 16"),
    ],
)
def test_bad_data_settings(photo_folder, kwargs, message):
    with pytest.raises(StylenetError, match=message):
        dm = PhotoDataModule(**{"root": str(photo_folder), **kwargs})
        dm.setup()


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no photos here")
    with pytest.raises(StylenetError, match="has no images"):
        PhotoDataModule(str(tmp_path)).setup()


def test_style_image_is_scaled_by_its_longer_side(tmp_path):
    from helpers import STYLES

    style = load_style_image(STYLES / "the_scream.jpg", 200)
    assert max(style.shape[-2:]) == 200 and style.shape[:2] == (1, 3)
    shutil.copy(STYLES / "wave.jpg", tmp_path / "w.jpg")
    with pytest.raises(StylenetError, match=r"style\.image not found"):
        load_style_image(tmp_path / "missing.jpg", 256)
