"""What `stylenet serve` does besides speaking HTTP: the styles it serves, how many requests it
takes at once, and turning an uploaded file into a stylized one, all in memory.

Kept apart from the web framework so that each piece is plain Python: the routes (`app.py`) only
read requests and map `RequestError` to a JSON answer. Every upload goes through the same
`Stylizer.stylize_many` as `stylenet stylize`, decoded as `load_image` decodes files (EXIF, ICC,
16-bit, alpha), but from bytes, with stricter limits: a server takes input from strangers.
"""

import asyncio
import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, UnidentifiedImageError

from stylenet.errors import StylenetError
from stylenet.runtime.images import Pixels, bound_size, to_image, to_pixels
from stylenet.runtime.styles import DEFAULT_STYLE, bundled_styles, card
from stylenet.runtime.stylizer import Stylizer

# Formats an upload may be in. Pillow opens more (EPS would start Ghostscript, some are rarely
# tested decoders): a server only tries the ones photos come in.
UPLOAD_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
# Answer formats: name -> (Pillow's format, media type).
FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
}
THUMBNAIL_SIZE = (320, 240)


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    """What one server takes: `workers` images stylized at once, `queue` more waiting (beyond
    them: 503), uploads of at most `max_upload_mb` (10^6 bytes) sent within `timeout` seconds,
    images of at most `max_megapixels` once decoded."""

    workers: int = 1
    queue: int = 4
    max_upload_mb: float = 25.0
    max_megapixels: float = 50.0
    timeout: float = 60.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


@dataclass(frozen=True)
class Options:
    """One stylize request's settings, checked (`parse_options`)."""

    style: str
    strength: float = 1.0
    preserve_color: bool = False
    max_size: int | None = None
    format: str = "jpeg"


class Gate:
    """Admission: at most `workers + queue` requests hold an upload or a job at once.

    Beyond that a request is refused at once with 503 and Retry-After (an estimate from recent
    service times), so memory stays bounded by the capacity times the upload limit. Only the
    event loop's thread calls it: no lock.
    """

    def __init__(self, workers: int, queue: int):
        self.workers = workers
        self.capacity = workers + queue
        self.in_flight = 0
        self.seconds = 1.0  # moving average of the time a request holds its place

    def slot(self) -> "Slot":
        """A place for one request, or RequestError 503 when all are taken."""
        if self.in_flight >= self.capacity:
            wait = max(1, math.ceil(self.seconds * self.capacity / self.workers))
            raise RequestError(
                503,
                f"busy: {self.in_flight} requests in progress; try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        self.in_flight += 1
        return Slot(self, time.monotonic())

    def leave(self, started: float) -> None:
        """Free a place taken at `started` (monotonic seconds), learning how long it was held."""
        self.in_flight -= 1
        self.seconds = 0.8 * self.seconds + 0.2 * (time.monotonic() - started)


class Slot:
    """A request's place in the `Gate`, as a context manager: freed when the block ends, or, once
    handed a job, when the job ends (a client that leaves cannot free a busy worker's place)."""

    def __init__(self, gate: Gate, started: float):
        self.gate = gate
        self.started = started
        self.job: Future | None = None

    def hand_over(self, job: Future) -> None:
        self.job = job

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.job is None:
            self.gate.leave(self.started)
            return
        loop = asyncio.get_running_loop()
        self.job.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self.gate.leave, self.started)
        )


class Service:
    """The styles (one onnxruntime session each, opened once), their thumbnails, the worker pool
    and the gate: everything the routes share."""

    def __init__(self, stylizers: dict[str, Stylizer], default: str, limits: Limits):
        self.stylizers = stylizers
        self.default = default
        self.limits = limits
        self.gate = Gate(limits.workers, limits.queue)
        self.executor = ThreadPoolExecutor(limits.workers, thread_name_prefix="stylenet-worker")
        scene = sample_scene(*THUMBNAIL_SIZE)
        self.thumbnails = {
            name: encode(to_image(stylizer.stylize(scene)), "jpeg", quality=90)
            for name, stylizer in stylizers.items()
        }

    @classmethod
    def load(
        cls,
        models: Path | None = None,
        limits: Limits | None = None,
        threads: int | None = None,
        warn: Callable[[str], None] = print,
    ) -> "Service":
        """Open every bundled style and every .onnx in `models` (theirs win a name clash); a
        model of several styles is served as one style per name, "<file stem>:<style>".

        A model that cannot be used costs a `warn` line; none usable is a StylenetError. Threads:
        onnxruntime's default for one worker, else the cores shared out between the workers.
        """
        limits = limits or Limits()
        if threads is None and limits.workers > 1:
            threads = max(1, (os.cpu_count() or 1) // limits.workers)
        stylizers = {}
        for name, path in find_models(models, warn).items():
            try:
                stylizer = Stylizer(path, threads=threads)
            except StylenetError as e:
                warn(f"skipped: {e}")
                continue
            styles = stylizer.style_names
            if len(styles) == 1:
                stylizers[name] = stylizer
            else:  # copies that share the one session
                stylizers |= {f"{name}:{style}": stylizer.using(style) for style in styles}
        if not stylizers:
            where = f" or in {models}" if models else "; --models DIR serves your own .onnx files"
            raise StylenetError(
                f"nothing to serve: no usable model among the bundled styles{where}"
            )
        default = DEFAULT_STYLE if DEFAULT_STYLE in stylizers else next(iter(stylizers))
        return cls(stylizers, default, limits)

    def submit(self, data: bytes, options: Options) -> Future:
        """Stylize an upload in the worker pool: a future of the encoded result."""
        stylizer = self.stylizers[options.style]
        return self.executor.submit(stylize_upload, stylizer, data, options, self.limits.max_pixels)

    def describe(self) -> dict:
        """The styles and limits, for the page and `GET /api/styles`."""
        styles = []
        for name, stylizer in self.stylizers.items():
            meta = stylizer.metadata
            style = {
                key: meta.get(f"style_{key}") for key in ("painting", "artist", "year", "licence")
            }
            for entry in json.loads(meta.get("style_cards", "[]")):  # one of several styles
                if entry["name"] == stylizer.style:
                    style = {key: entry[key] for key in style}
            styles.append(
                {
                    "name": name,
                    "painting": style["painting"] or stylizer.style,
                    "artist": style["artist"],
                    "year": style["year"],
                    "licence": style["licence"],
                    "card": card(meta),
                    "thumbnail": f"/api/styles/{quote(name, safe='')}/thumbnail",
                }
            )
        limits = self.limits
        return {
            "default": self.default,
            "styles": styles,
            "limits": {
                "max_upload_mb": limits.max_upload_mb,
                "max_megapixels": limits.max_megapixels,
            },
            "formats": list(FORMATS),
        }

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def find_models(models: Path | None, warn: Callable[[str], None]) -> dict[str, Path]:
    """Name -> file: the bundled styles, then `models`/*.onnx by file name (stem)."""
    found = bundled_styles()
    if models is None:
        return found
    if not models.is_dir():
        raise StylenetError(f"{models}: not a folder")
    for path in sorted(models.iterdir()):
        if path.suffix.lower() != ".onnx" or not path.is_file():
            continue
        if path.stem in found:
            warn(f"note: {path} replaces the bundled style {path.stem}")
        found[path.stem] = path
    return found


def parse_options(
    fields: Mapping[str, str], accept: str | None, styles: Mapping[str, object], default: str
) -> Options:
    """A stylize request's form fields as Options, or RequestError naming the bad one."""
    style = fields.get("style") or default
    if style not in styles:
        raise RequestError(404, f"unknown style {style!r}; styles: {', '.join(styles)}")
    strength = _number(fields, "strength", 1.0)
    if not 0.0 <= strength <= 1.0:
        raise RequestError(422, f"strength must be in [0, 1], got {fields['strength']!r}")
    max_size = _number(fields, "max_size", None)
    if max_size is not None and (max_size != int(max_size) or max_size < 1):
        raise RequestError(422, f"max_size must be a whole number >= 1, got {fields['max_size']!r}")
    return Options(
        style,
        strength,
        _flag(fields, "preserve_color"),
        None if max_size is None else int(max_size),
        _answer_format(fields.get("format"), accept),
    )


def _number(fields: Mapping[str, str], key: str, default: float | None) -> float | None:
    text = fields.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise RequestError(422, f"{key} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise RequestError(422, f"{key} must be a finite number, got {text!r}")
    return value


def _flag(fields: Mapping[str, str], key: str) -> bool:
    text = fields.get(key, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise RequestError(422, f"{key} must be true or false, got {fields[key]!r}")


def _answer_format(name: str | None, accept: str | None) -> str:
    """The `format` field, else the Accept header's preferred format (jpeg for */*)."""
    if name:
        name = {"jpg": "jpeg"}.get(name.lower().strip(), name.lower().strip())
        if name not in FORMATS:
            raise RequestError(422, f"format must be one of {', '.join(FORMATS)}, got {name!r}")
        return name
    by_media = {media: fmt for fmt, (_, media) in FORMATS.items()} | {
        "*/*": "jpeg",
        "image/*": "jpeg",
    }
    ranked = []
    for position, item in enumerate((accept or "*/*").split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        weight = next((p[2:] for p in params if p.startswith("q=")), "1")
        with contextlib.suppress(ValueError):
            if media in by_media and float(weight) > 0:
                ranked.append((-float(weight), position, by_media[media]))
    if not ranked:
        media_types = ", ".join(media for _, media in FORMATS.values())
        raise RequestError(406, f"Accept: this server answers with {media_types}")
    return min(ranked)[2]


def stylize_upload(stylizer: Stylizer, data: bytes, options: Options, max_pixels: int) -> bytes:
    """An uploaded file stylized and encoded: decode, `Stylizer.stylize_many`, encode."""
    pixels = decode(data, options.max_size, max_pixels)
    try:
        (rgb,) = stylizer.stylize_many([pixels.rgb], options.strength, options.preserve_color)
    except Exception as e:  # onnxruntime failures (e.g. out of memory) have no common base class
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RequestError(500, f"stylizing failed ({reason}); a smaller max_size may help") from e
    return encode(to_image(rgb, pixels.alpha), options.format)


def decode(data: bytes, max_size: int | None, max_pixels: int) -> Pixels:
    """An upload as sRGB pixels, like `load_image` (the same `to_pixels`), from memory.

    The pixel count is checked from the header, before any pixel is decoded: a small file can
    announce a huge image (a decompression bomb).
    """
    if not data:
        raise RequestError(400, "the image file is empty")
    Image.init()  # registers every plugin: until then Image.OPEN has only the commonest four
    formats = [name for name in UPLOAD_FORMATS if name in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=formats) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise RequestError(
                        413,
                        f"image of {width}x{height} pixels: this server takes at most "
                        f"{max_pixels / 1e6:g} megapixels",
                    )
                if max_size is not None:
                    image.draft("RGB", (max_size, max_size))
                image.load()
                pixels = to_pixels(image)
    except RequestError:
        raise
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        names = ", ".join(n for n in formats if n != "MPO")
        raise RequestError(415, f"not an image, or not one of {names}") from None
    except MemoryError:
        raise RequestError(413, "too large to decode in the available memory") from None
    except Exception as e:  # decoder plugins raise OSError, SyntaxError, struct.error, ...
        raise RequestError(400, f"truncated or corrupt image ({e})") from None
    return bound_size(pixels, max_size) if max_size is not None else pixels


def encode(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    """`image` as a file in `fmt` (a FORMATS key): JPEG and WebP at `quality` (95, as the CLI
    writes: the default 75 shows artefacts on stylized textures), JPEG without alpha."""
    pil_format = FORMATS[fmt][0]
    if pil_format == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = BytesIO()
    options = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {}
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


def sample_scene(width: int, height: int) -> np.ndarray:
    """A drawn landscape (sky, sun, three ranges of hills, a lake) that each style's thumbnail
    paints: the package ships no photo, and shapes, edges and gradients show a style as a photo
    would. uint8 HxWx3, the same for every call."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    horizon = 0.62
    sky = np.stack([0.25 + 0.7 * v, 0.35 + 0.45 * v, 0.75 - 0.3 * v], axis=-1)
    sun = np.exp(-(((u - 0.7) ** 2 + ((v - 0.38) * height / width) ** 2) / 0.004))[..., None]
    image = sky + sun * np.array([1.0, 0.8, 0.35])
    hills = [
        (0.42, 0.08, 3.0, (0.35, 0.4, 0.6)),
        (0.5, 0.06, 5.0, (0.2, 0.3, 0.35)),
        (0.56, 0.05, 9.0, (0.12, 0.22, 0.12)),
    ]
    for top, amplitude, waves, colour in hills:
        ridge = top + amplitude * (np.sin(waves * u * 6.28 + waves) * 0.6 + np.sin(17 * u) * 0.4)
        shade = 1 - 0.5 * (v - ridge).clip(0, 0.3)
        image = np.where((v > ridge)[..., None], np.array(colour) * shade[..., None], image)
    mirrored = image[np.clip((2 * horizon * height - y).astype(int), 0, height - 1), x.astype(int)]
    ripples = 0.85 + 0.1 * np.sin(v * 180 + np.sin(u * 25) * 2)[..., None]
    image = np.where((v > horizon)[..., None], mirrored * ripples * 0.8, image)
    noise = np.random.default_rng(0).normal(0, 0.03, image.shape)
    return (np.clip(image + noise, 0, 1) * 255 + 0.5).astype(np.uint8)
