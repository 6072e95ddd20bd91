"""Stylize images with an exported model in onnxruntime: what users run, with no torch installed.

The model convention (stylenet/training/export.py): one input "image", float32 NCHW RGB in [0, 1]
of any batch, height and width; one output "stylized" of the same shape, already clamped to
[0, 1]. Models with the statistics interface (an output "norm_stats" and optional inputs, every
model export.py writes unless plain) can also run in tiles, in bounded memory
(`stylenet.runtime.tiling`). Plain forms (`stylenet.runtime.plain`) run whole images only, and
those of a fixed size only images of that size. A model of several styles also takes their
weights ("style_weights", [1, styles]): `Stylizer.using` chooses one style or a blend.
"""

import copy
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from PIL import Image

from stylenet.errors import StylenetError
from stylenet.runtime.images import load_image, to_image, to_pixels
from stylenet.runtime.styles import DEFAULT_STYLE, blend_label, model_path, parse_blend
from stylenet.runtime.tiling import AUTO_TILE_PIXELS, TILE, stats_crops, stylize_in_tiles

if TYPE_CHECKING:
    from stylenet.runtime.video import VideoReport

INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
STATS_NAME = "norm_stats"
GIVEN_STATS_NAME = "given_norm_stats"
USE_GIVEN_NAME = "use_given_norm_stats"
POOL_STATS_NAME = "pool_norm_stats"
OPTIONAL_INPUTS = (GIVEN_STATS_NAME, USE_GIVEN_NAME, POOL_STATS_NAME)
STYLE_WEIGHTS_NAME = "style_weights"  # [1, styles]: a model of several styles needs it

ImageInput = str | Path | Image.Image | np.ndarray

# Rec. 601 luma, the Y of JPEG's YCbCr.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Stylizer:
    """An exported stylenet model, loaded once into an onnxruntime session and reused.

    `model`: a bundled style's name (`stylenet styles` lists them) or the path of an .onnx file.
    `providers`: onnxruntime execution providers in order of preference; by default CUDA when
    this onnxruntime build has it, else CPU. `threads`: intra-op threads (onnxruntime's default,
    one per physical core, when None). `tile`: run images that do not fit in `tile` x `tile`
    pixels in overlapping tiles of at most that size, sharing the whole image's statistics; 0:
    always whole; None: tiles of `TILE` for images above `AUTO_TILE_PIXELS`, when the model
    can be tiled (a plain graph without the statistics interface cannot: it always runs whole).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_STYLE,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        tile: int | None = None,
    ):
        self.path = model_path(model)
        self.session = _open_session(self.path, providers, threads)
        has_stats, many_styles = _check_convention(self.path, self.session)
        self.input_name = self.session.get_inputs()[0].name
        dims = self.session.get_inputs()[0].shape
        # A fixed-size plain form takes one image of its size: (height, width), else None.
        self.fixed_size = tuple(dims[2:]) if all(isinstance(n, int) for n in dims) else None
        self.output_name = self.session.get_outputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.style: str = self.metadata.get("style_name") or self.path.stem
        # A model of several styles: their names, and the weights `using` chose (None: not yet).
        self.style_names: list[str] = (
            _style_names(self.path, self.session, self.metadata) if many_styles else [self.style]
        )
        self.weights: np.ndarray | None = None
        radius = self.metadata.get("receptive_radius", "")
        downsample = self.metadata.get("downsample", "")
        tileable = has_stats and radius.isdigit() and downsample.isdigit() and int(downsample) > 0
        # Tiles start on the network's pixel grid and overlap by its receptive radius: their kept
        # centres are exactly the whole image's.
        self.align = int(downsample) if tileable else 1
        self.overlap: int | None = -(-int(radius) // self.align) * self.align if tileable else None
        if tile:
            if self.overlap is None:
                raise StylenetError(
                    f"{self.path}: this model cannot be tiled (no statistics interface or no "
                    "tiling metadata): shrink the images (--max-size)"
                )
            if tile < 4 * self.overlap:
                raise StylenetError(
                    f"tile must be 0 (no tiling) or at least {4 * self.overlap} pixels for this "
                    f"model, got {tile}"
                )
        self.tile = tile

    def using(self, style: str | Mapping[str, float]) -> "Stylizer":
        """This model with one of its styles chosen, or a blend: a name, "name:weight,name:weight"
        or a mapping of names to weights (normalised to sum to 1; Dumoulin et al. 2017 blend the
        styles' instance-norm scales and shifts, not pixels). The copy shares the session.

        A model of one style takes its own name only.
        """
        weights = parse_blend(style) if isinstance(style, str) else dict(style)
        unknown = [name for name in weights if name not in self.style_names]
        if unknown:
            names = ", ".join(self.style_names)
            raise StylenetError(f"{self.path} has no style {unknown[0]!r}; its styles: {names}")
        if any(not w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise StylenetError(f"style weights must be >= 0 and not all 0, got {style}")
        total = sum(weights.values())
        chosen = copy.copy(self)
        chosen.style = blend_label({name: w / total for name, w in weights.items()})
        if len(self.style_names) > 1:
            row = [weights.get(name, 0.0) / total for name in self.style_names]
            chosen.weights = np.array([row], np.float32)
        return chosen

    def stylize(
        self,
        image: ImageInput,
        strength: float = 1.0,
        preserve_color: bool = False,
        style: str | Mapping[str, float] | None = None,
    ) -> Image.Image | np.ndarray:
        """Stylize one image of any size, at the same size: an array for an array, else a PIL
        image.

        Files (a path) and PIL images of any mode are taken as the CLI takes files: EXIF
        orientation applied, 16-bit and CMYK scaled properly, ICC profiles converted to sRGB,
        alpha kept. Arrays must be uint8 HxWx3 RGB. See `stylize_many` for `strength`,
        `preserve_color` and `style`.
        """
        return self.stylize_many([image], strength, preserve_color, style=style)[0]

    def stylize_many(
        self,
        images: Sequence[ImageInput],
        strength: float = 1.0,
        preserve_color: bool = False,
        batch_size: int = 4,
        style: str | Mapping[str, float] | None = None,
    ) -> list[Image.Image | np.ndarray]:
        """Stylize images in order, running same-size images together in batches of `batch_size`.

        `strength` in [0, 1] blends the original (0) and the stylized image (1).
        `preserve_color` keeps the photo's colours and takes only the luminance from the stylized
        image (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").
        `style`: for a model of several styles, one of them or a blend (`using`).
        Images to be tiled (see the class) run one at a time.
        """
        if style is not None:
            return self.using(style).stylize_many(images, strength, preserve_color, batch_size)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        inputs = [_as_pixels(image) for image in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, (rgb, _) in enumerate(inputs):
            by_size.setdefault(rgb.shape, []).append(index)
        results: list[Image.Image | np.ndarray] = [np.empty(0)] * len(inputs)
        for shape, indices in by_size.items():
            if self.fixed_size not in (None, shape[:2]):
                height, width = self.fixed_size
                raise StylenetError(
                    f"{self.path} is a fixed-size plain form: it takes {width}x{height} px "
                    f"images only, got {shape[1]}x{shape[0]}"
                )
            tile = self.tile_for(*shape[:2])
            step = 1 if tile or self.fixed_size else batch_size
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                if tile:
                    rgb = inputs[chunk[0]][0]
                    pixels = self.stylize_tiled(rgb, tile, strength, preserve_color)[None]
                else:
                    originals = np.stack([inputs[i][0] for i in chunk]).astype(np.float32) / 255
                    pixels = _finish(originals, self.run(originals), strength, preserve_color)
                for i, rgb in zip(chunk, pixels, strict=True):
                    alpha = inputs[i][1]
                    results[i] = rgb if isinstance(images[i], np.ndarray) else to_image(rgb, alpha)
        return results

    def stylize_video(
        self,
        source: str | Path,
        target: str | Path,
        stability: float | None = None,
        max_size: int | None = None,
        strength: float = 1.0,
        preserve_color: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        style: str | Mapping[str, float] | None = None,
    ) -> "VideoReport":
        """Stylize the video file `source` into `target` with strokes that stay on the scene,
        audio kept: `stylenet.runtime.video.stylize_video`, which needs the [video] extra (PyAV
        and OpenCV), imported only here so that photos never need it. `style`: as `using`."""
        if style is not None:
            return self.using(style).stylize_video(
                source, target, stability, max_size, strength, preserve_color, overwrite, progress
            )
        try:
            from stylenet.runtime.video import stylize_video
        except ModuleNotFoundError as e:
            if e.name not in ("av", "cv2"):
                raise
            raise StylenetError(
                "videos need the [video] extra: pip install 'stylenet[video]'"
            ) from None
        return stylize_video(
            self, source, target, stability, max_size, strength, preserve_color, overwrite, progress
        )

    def tile_for(self, height: int, width: int) -> int | None:
        """The tile side an image of this size is run in, None when it runs whole."""
        if self.overlap is None or self.tile == 0:
            return None
        if self.tile is None:
            return max(TILE, 4 * self.overlap) if height * width > AUTO_TILE_PIXELS else None
        return self.tile if max(height, width) > self.tile else None

    def run(self, batch: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
        """The bare model: float NxHxWx3 RGB in [0, 1] -> stylized, same layout, in [0, 1].

        `stats` (from `norm_stats`) replace the instance-norm statistics of the batch's own.
        """
        (out,) = self._run([self.output_name], batch, stats)
        return out.transpose(0, 2, 3, 1)

    def run_and_measure(
        self, batch: np.ndarray, stats: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`run`, also returning what each instance norm measured on its input ([N, K]): the
        batch's own statistics, or with `stats` those of the input under them. An image given
        its own statistics measures them again: the point a clip's moving statistics approach
        (`runtime.temporal`)."""
        out, measured = self._run([self.output_name, STATS_NAME], batch, stats)
        return out.transpose(0, 2, 3, 1), measured

    def _run(
        self, outputs: list[str], batch: np.ndarray, stats: np.ndarray | None
    ) -> list[np.ndarray]:
        feeds = {self.input_name: np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32)}
        if stats is not None:
            feeds |= {GIVEN_STATS_NAME: stats, USE_GIVEN_NAME: np.array(True)}
        return self.session.run(outputs, feeds | self._style_feed())

    def norm_stats(self, rgb: np.ndarray) -> np.ndarray:
        """Instance-norm statistics [1, K] of a uint8 HxWx3 image, for `run`: exact up to
        `STATS_PIXELS`, pooled over crops of larger ones (`tiling.stats_crops`)."""
        crops = stats_crops(rgb, self.overlap)

        feeds = {
            self.input_name: crops.transpose(0, 3, 1, 2).astype(np.float32) / 255,
            POOL_STATS_NAME: np.array(True),
        }
        (stats,) = self.session.run([STATS_NAME], feeds | self._style_feed())
        return stats[:1]

    def require_style(self) -> None:
        """Refuse, in one line, a model of several styles with none chosen (`using`)."""
        if len(self.style_names) > 1 and self.weights is None:
            raise StylenetError(
                f"{self.path} holds {len(self.style_names)} styles "
                f"({', '.join(self.style_names)}): choose one or a blend with --style NAME or "
                "NAME:0.7,NAME:0.3 (in Python: Stylizer.using)"
            )

    def _style_feed(self) -> dict[str, np.ndarray]:
        """The style weights input, for a model of several styles."""
        self.require_style()
        return {} if self.weights is None else {STYLE_WEIGHTS_NAME: self.weights}

    def stylize_tiled(
        self,
        rgb: np.ndarray,
        tile: int,
        strength: float = 1.0,
        preserve_color: bool = False,
        stats: np.ndarray | None = None,
    ) -> np.ndarray:
        """One uint8 HxWx3 image in tiles of at most `tile` x `tile` pixels (`tiling`), every
        tile normalised with `stats` (a clip's), else with the image's own (`norm_stats`)."""
        stats = self.norm_stats(rgb) if stats is None else stats

        def run(window: np.ndarray) -> np.ndarray:
            return _finish(window, self.run(window, stats), strength, preserve_color)

        return stylize_in_tiles(rgb, tile, self.overlap, self.align, run)


def _finish(
    originals: np.ndarray, stylized: np.ndarray, strength: float, preserve_color: bool
) -> np.ndarray:
    """The stylized batch as uint8 pixels, with `preserve_color` and `strength` applied.

    In C order: the model's output arrives channel by channel (`run` returns a transposed view),
    and OpenCV copies an array of that layout before every operation on it (the video path)."""
    if preserve_color:
        stylized = transfer_luminance(originals, stylized)
    if strength < 1:
        stylized = originals + strength * (stylized - originals)
    return (np.clip(stylized, 0, 1) * 255 + 0.5).astype(np.uint8, order="C")


def transfer_luminance(originals: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """The originals' chroma (Cb, Cr) with the stylized luminance (Y), in RGB.

    YCbCr -> RGB adds Y with weight 1 to every channel, so swapping Y is adding the difference.
    """
    return originals + ((stylized - originals) @ _LUMA)[..., None]


def _as_pixels(image: ImageInput) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 HxWx3 sRGB, alpha or None) from what `stylize` accepts."""
    if isinstance(image, (str, Path)):
        try:
            pixels = load_image(image)
        except StylenetError as e:
            raise StylenetError(f"{image}: {e}") from None
        return pixels.rgb, pixels.alpha
    if isinstance(image, Image.Image):
        pixels = to_pixels(image)
        return pixels.rgb, pixels.alpha
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 HxWx3 RGB array, got {image.dtype} {image.shape}")
        return image, None
    raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _open_session(
    path: Path, providers: Sequence[str] | None, threads: int | None
) -> ort.InferenceSession:
    """The onnxruntime session, or a one-line StylenetError saying why the file is not usable."""
    if not path.is_file():
        raise StylenetError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise StylenetError(f"{path}: model file is empty")
    if zipfile.is_zipfile(path):
        raise StylenetError(
            f"{path}: a PyTorch checkpoint, not an ONNX model; export it first: "
            f"python export.py ckpt={path} output=MODEL.onnx"
        )
    available = ort.get_available_providers()
    missing = [p for p in providers or () if p not in available]
    if missing:  # onnxruntime would only warn and fall back to the CPU
        raise StylenetError(
            f"execution provider(s) {', '.join(missing)} not in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr for every session
    # onnxruntime's default, stated: all graph optimisations are 14% faster than none (512 px).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern keeps one more block per input shape: without it the full-width network
    # peaks at 1.2 instead of 1.65 GB on a megapixel, at the same speed.
    options.enable_mem_pattern = False
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(
            str(path), options, providers=list(providers or default_providers())
        )
    except Exception as e:  # onnxruntime raises several unrelated types for unreadable models
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = reason.split(" : ")[-1]  # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : why"
        raise StylenetError(
            f"{path}: not a usable ONNX model (truncated, corrupt or another format?): {reason}"
        ) from None


def _check_convention(path: Path, session: ort.InferenceSession) -> tuple[bool, bool]:
    """Refuse ONNX models that are not one float NCHW RGB image in, one out (besides optional
    inputs, which a caller may leave out, and the style weights of a model of several styles);
    say whether the model also has the statistics interface that tiling needs (a plain form has
    not), and whether it holds several styles."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    many_styles = inputs[-1].name == STYLE_WEIGHTS_NAME and len(inputs) > 1
    if many_styles:
        inputs = inputs[:-1]

    def is_rgb_image(arg: ort.NodeArg) -> bool:
        return arg.type == "tensor(float)" and len(arg.shape) == 4 and arg.shape[1] == 3

    # Inputs of ONNX type optional(tensor) may be left out (export.optional_inputs).
    optional = {arg.name for arg in inputs[1:] if arg.type.startswith("optional(")}
    extra_outputs = [arg.name for arg in outputs[1:]]
    images = inputs[:1] + outputs[:1]
    one_in_one_out = len(images) == 2 and all(map(is_rgb_image, images))
    if (
        not one_in_one_out
        or len(optional) < len(inputs) - 1
        or extra_outputs not in ([], [STATS_NAME])
    ):
        found = ", ".join(f"{a.name} {a.type} {a.shape}" for a in inputs)
        raise StylenetError(
            f"{path}: not a stylenet model: expected one float32 input of shape "
            f"[batch, 3, height, width] (and optional ones) and one such output, found inputs: "
            f"{found}"
        )
    return extra_outputs == [STATS_NAME] and optional >= set(OPTIONAL_INPUTS), many_styles


def _style_names(path: Path, session: ort.InferenceSession, metadata: dict[str, str]) -> list[str]:
    """The names of a model's styles, in the order of its style weights (metadata)."""
    count = session.get_inputs()[-1].shape[-1]
    try:
        names = json.loads(metadata.get("style_names", ""))
    except ValueError:
        names = None
    if not isinstance(names, list) or len(names) != count:
        raise StylenetError(f"{path}: a model of {count} styles without their names in metadata")
    return [str(name) for name in names]
