"""Training photos: a folder of images (a COCO train2014/2017 folder works as is)."""

import ctypes
import multiprocessing as mp
import random
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stylenet.errors import StylenetError, check_number
from stylenet.runtime.images import find_images, load_image

MIN_IMAGE_SIZE = 32  # below this VGG's four poolings leave (almost) nothing to compare


def load_scaled(path: str | Path, size: int) -> Image.Image:
    """A photo read as the runtime reads it (EXIF orientation, ICC profile, 16-bit: the pixels a
    user's photo will have), its shorter side scaled to `size`."""
    image = Image.fromarray(load_image(path, draft=size).rgb)
    scale = size / min(image.size)
    return image.resize(
        (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
        Image.Resampling.BICUBIC,
        reducing_gap=3.0,
    )


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)


class PhotoDataset(Dataset):
    """Photos scaled and cropped to `image_size` squares; random crops for training, centred else.

    An unreadable or corrupt file never stops a run: it is reported once, flagged in a table shared
    by all data-loader workers, and the next good photo takes its place.
    """

    def __init__(self, files: list[Path], image_size: int, train: bool):
        self.files = files
        self.image_size = image_size
        self.train = train
        # One byte per file, shared with worker processes, so each bad file is reported once.
        self.bad = mp.Array(ctypes.c_bool, len(files), lock=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_bad(self) -> int:
        return sum(self.bad)

    def __getitem__(self, index: int) -> torch.Tensor:
        for i in range(index, index + len(self.files)):
            i %= len(self.files)
            if self.bad[i]:
                continue
            try:
                image = load_scaled(self.files[i], self.image_size)
            except Exception as e:
                self.bad[i] = True
                warnings.warn(f"skipping unreadable image {self.files[i]}: {e}", stacklevel=1)
                continue
            return to_tensor(self._crop(image))
        raise StylenetError(f"none of the {len(self.files)} images could be read")

    def _crop(self, image: Image.Image) -> Image.Image:
        s = self.image_size
        if self.train:
            left, top = random.randint(0, image.width - s), random.randint(0, image.height - s)
        else:
            left, top = (image.width - s) // 2, (image.height - s) // 2
        return image.crop((left, top, left + s, top + s))


class PhotoDataModule(pl.LightningDataModule):
    """Training photos from `root`; validation photos from `val_root` or held out from `root`."""

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_fraction: float = 0.02,
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        if not root:
            raise StylenetError("data.root is missing: set data.root=FOLDER_OF_PHOTOS")
        check_number("data.image_size", image_size, MIN_IMAGE_SIZE, integer=True)
        check_number("data.batch_size", batch_size, 1, integer=True)
        check_number("data.num_workers", num_workers, 0, integer=True)
        check_number("data.val_fraction", val_fraction, 0)
        if val_fraction >= 1:
            raise StylenetError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.root, self.val_root, self.val_fraction = root, val_root, val_fraction
        self.image_size, self.batch_size = image_size, batch_size
        self.num_workers, self.seed = num_workers, seed
        self.train_set: PhotoDataset | None = None
        self.val_set: PhotoDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = self._images(self.root, "data.root")
        if self.val_root:
            val = self._images(self.val_root, "data.val_root")
        else:  # hold out a fixed, seeded fraction (at least one photo)
            shuffled = random.Random(self.seed).sample(train, len(train))
            n_val = max(1, round(self.val_fraction * len(train))) if len(train) > 1 else 0
            val, train = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
            if not val:
                raise StylenetError(
                    f"data.root {self.root} needs at least 2 images or a data.val_root"
                )
        if len(train) < self.batch_size:
            raise StylenetError(
                f"data.root {self.root} has {len(train)} training images, < data.batch_size"
            )
        self.train_set = PhotoDataset(train, self.image_size, train=True)
        self.val_set = PhotoDataset(val, self.image_size, train=False)

    @staticmethod
    def _images(folder: str, key: str) -> list[Path]:
        if not Path(folder).is_dir():
            raise StylenetError(f"{key} folder not found: {folder}")
        files = find_images(folder)
        if not files:
            raise StylenetError(f"{key} {folder} has no images")
        return files

    def _loader(self, dataset: PhotoDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # equal-size batches keep per-step losses comparable
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def sample_photos(self, count: int) -> torch.Tensor:
        """The first `count` validation photos: a fixed set to show progress on."""
        self.setup()
        return torch.stack([self.val_set[i] for i in range(min(count, len(self.val_set)))])

    def num_skipped(self) -> int:
        """How many unreadable images were skipped so far, training and validation together."""
        return sum(s.num_bad for s in (self.train_set, self.val_set) if s is not None)


def load_style_image(path: str | Path, size: int) -> torch.Tensor:
    """The style image as a (1, 3, H, W) tensor with its longer side scaled to `size`.

    `size` sets the scale of the brush strokes the network learns: the Gram matrices describe
    patterns at the pixel scale of this image.
    """
    if not Path(path).is_file():
        raise StylenetError(f"style.image not found: {path}")
    check_number("style.size", size, MIN_IMAGE_SIZE, integer=True)
    try:
        image = Image.fromarray(load_image(path).rgb)
    except StylenetError as e:
        raise StylenetError(f"cannot read style.image {path}: {e}") from None
    scale = size / max(image.size)
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BICUBIC,
        reducing_gap=3.0,
    )
    return to_tensor(image)[None]
