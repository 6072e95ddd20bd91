"""Turning real-world image files into clean sRGB pixels and writing results safely (torch-free).

Photos are messy: EXIF-rotated, 16-bit, CMYK, palette, transparent, ICC-tagged, animated,
truncated or not images at all. Everything here either returns 8-bit sRGB pixels (plus the alpha
channel, kept aside) or raises `StylenetError` with a one-line reason, so that a caller handling
a folder can report the file and go on with the next one.
"""

import os
import secrets
import warnings
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from stylenet.errors import StylenetError

# 16-bit and 32-bit integer greys: Pillow's convert("RGB") clips them to 0..255 (almost all white).
_WIDE_GREY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_SRGB = ImageCms.createProfile("sRGB")


@dataclass
class Pixels:
    """An image as uint8 arrays: `rgb` is HxWx3 sRGB, `alpha` HxW or None; `notes` say what was
    done that the user may want to know (first frame of an animation, an unusable ICC profile)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def load_image(path: str | Path, max_size: int | None = None, draft: int | None = None) -> Pixels:
    """Read an image file as sRGB pixels, its longer side bounded by `max_size` (never enlarged).

    JPEGs are decoded at reduced resolution where that still covers `draft` x `draft` pixels
    (`max_size` by default; Pillow's draft mode): a 640x480 photo for a 256 px crop decodes ~4x
    faster. Raises StylenetError (message without the file name: the caller names it) for an
    empty, truncated, corrupt, non-image or decompression-bomb file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise StylenetError("empty file")
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a camera photo can be 100 MP.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)
                draft = draft or max_size
                if draft is not None:
                    image.draft("RGB", (draft, draft))
                image.load()
                pixels = to_pixels(image)
    except StylenetError:
        raise
    except FileNotFoundError:
        raise StylenetError("no such file") from None
    except IsADirectoryError:
        raise StylenetError("is a directory") from None
    except Image.DecompressionBombError as e:
        raise StylenetError(f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise StylenetError("not an image, or a format Pillow cannot read") from None
    except MemoryError:
        raise StylenetError("too large to decode in the available memory") from None
    except Exception as e:  # decoder plugins raise OSError, SyntaxError, struct.error, ...
        raise StylenetError(f"truncated or corrupt image ({e})") from None
    if frames > 1:
        pixels.notes.append(f"{frames} frames: used the first")
    if max_size is not None:
        pixels = bound_size(pixels, max_size)
    return pixels


def to_pixels(image: Image.Image) -> Pixels:
    """Normalise a decoded PIL image: EXIF orientation, alpha kept aside, colours to 8-bit sRGB."""
    notes: list[str] = []
    profile = image.info.get("icc_profile")
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, KeyError, TypeError) as e:
        notes.append(f"EXIF orientation unreadable, ignored ({e})")
    alpha = None
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("LA" if image.mode in ("LA", "La") else "RGBA")
        alpha = np.asarray(image.getchannel("A"))
        image = image.convert(image.mode[:-1])
    if image.mode in _WIDE_GREY_MODES or image.mode == "F":
        image = Image.fromarray(_grey_to_uint8(np.asarray(image)))
    elif image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")  # palette, bilevel, YCbCr, LAB, HSV
    rgb = None
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(BytesIO(profile))
            rgb = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as e:
            notes.append(f"ICC profile not applied ({e})")
    if rgb is None:
        rgb = image.convert("RGB")
    return Pixels(np.asarray(rgb), alpha, notes)


def _grey_to_uint8(grey: np.ndarray) -> np.ndarray:
    """16-bit (or float in [0, 1]) grey to 8-bit by scaling, where Pillow would clip."""
    if grey.dtype.kind == "f":
        return (np.clip(np.nan_to_num(grey), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return ((np.clip(grey, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def bound_size(pixels: Pixels, max_size: int) -> Pixels:
    """Shrink so that the longer side is at most `max_size`, keeping the aspect ratio."""
    height, width = pixels.rgb.shape[:2]
    scale = max_size / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def shrink(array: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))

    alpha = None if pixels.alpha is None else shrink(pixels.alpha)
    return Pixels(shrink(pixels.rgb), alpha, pixels.notes)


def to_image(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """uint8 arrays back to a PIL image, RGBA when there is an alpha channel."""
    image = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    return image


def readable_suffixes() -> set[str]:
    """The file extensions Pillow can open (".jpg", ".tif", ...): what folders are scanned for."""
    return {ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN}


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """The image files in `folder` (and its subfolders when `recursive`), by extension in any
    case, in a stable order."""
    return find_files(folder, readable_suffixes(), recursive)


def find_files(folder: str | Path, suffixes: Set[str], recursive: bool = True) -> list[Path]:
    """The files in `folder` (and its subfolders when `recursive`) whose extension, in any case,
    is one of `suffixes` (lower case, with the dot), in a stable order."""
    files = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(f for f in files if f.suffix.lower() in suffixes and f.is_file())


def saveable_format(suffix: str) -> str | None:
    """Pillow's format name for writing files with this extension (".jpg" -> "JPEG"), else None."""
    name = Image.registered_extensions().get(suffix.lower())
    return name if name in Image.SAVE else None


def save_image(image: Image.Image, path: Path, overwrite: bool = False) -> None:
    """Write `image` atomically, in the format its extension names; never clobber unless asked.

    JPEG and WebP are written at quality 95 (Pillow's default 75 shows artefacts on stylized
    textures). A format without alpha (JPEG) gets the RGB part only.
    """
    fmt = saveable_format(path.suffix)
    if fmt is None:
        raise StylenetError(f"cannot write {path.suffix or 'extension-less'} files")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    write_atomically(path, lambda f: image.save(f, fmt, **options), overwrite)


def write_atomically(path: Path, write: Callable[[Path], None], overwrite: bool) -> None:
    """Run `write` on a temporary file beside `path`, then rename it into place in one step.

    A crash or a full disk leaves at worst a hidden temporary file, never a half-written output.
    Without `overwrite` the rename is a hard link, which fails if `path` appeared meanwhile.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise StylenetError(f"{path} exists (overwrite to replace it)") from None
            except OSError:  # no hard links on this file system: check, then rename
                if path.exists():
                    raise StylenetError(f"{path} exists (overwrite to replace it)") from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
