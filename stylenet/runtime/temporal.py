"""Stylizing a clip's frames with strokes that stay on the scene (needs OpenCV: the [video] extra).

Stylized frame by frame, a clip shimmers: every stroke is repainted on every frame. Three things
hold the strokes still, each measured in benchmarks/video.py (docs/design.md has the figures):

- Statistics. Instance normalisation renormalises every frame with its own statistics; here they
  are an exponential moving average over the clip, so the palette and contrast drift with the
  scene instead of jumping. Each frame's pass also measures what its layers see under the shared
  statistics (`Stylizer.run_and_measure`), the next update: for a still scene the average
  settles on the scene's own statistics, at no extra pass. Frames large enough to run in tiles
  are measured by a statistics pass (`Stylizer.norm_stats`) every `STATS_EVERY` frames.
- The network's grid. It paints on a grid of `Stylizer.align` (4) pixels, so a pan by 3 pixels
  repaints every stroke where a pan by 4 moves them. Each frame is shifted by the camera's
  accumulated motion modulo the grid before it is stylized: a pan then keeps its strokes.
- Optical flow. The previous result, warped into the current frame by DIS optical flow (OpenCV),
  is blended in wherever the flow is consistent forwards and backwards; occluded and uncovered
  pixels (where it is not) come from the fresh frame only, so moving objects leave no ghosts.
  Averaging two unrelated textures washes the strokes out, so the blend's fine detail is scaled
  back up to the fresh frame's local contrast (variance-preserving blending, as in Heitz and
  Neyret 2018, "High-Performance By-Example Noise using a Histogram-Preserving Blending Operator").

The idea of flow-guided blending with occlusion masks is Ruder, Dosovitskiy and Brox 2016,
"Artistic style transfer for videos".
"""

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from stylenet.errors import StylenetError
from stylenet.runtime.stylizer import Stylizer, _finish

# 0: every frame on its own; 1: the first frame's statistics and strokes carried as far as the
# motion can be followed. 0.95 measured best (benchmarks/video.py): the lowest temporal error of
# 0.5-0.95, 4% of per frame on a pan and 16% on a zoom with a moving object, and the only one
# whose style error stayed within 5% of per frame.
DEFAULT_STABILITY = 0.95
# For frames stylized in tiles, the statistics pass costs as much as stylizing the frame: measured
# every few frames only (they move by 5% a frame at the default stability, so a measurement 8
# frames old is as good).
STATS_EVERY = 8
# Optical flow runs on frames shrunk to this longer side: at 720p a seventh of the pixels, and
# the strokes are blended, not tracked to the pixel. On a 720p pan (benchmarks/video.py) 480 px
# left a lower temporal error than 640 (1.9 against 2.1 levels) and 320 a higher one (3.0).
FLOW_SIDE = 480
# DIS's FAST preset doubled the temporal error on the benchmark's clips.
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# Variance-preserving blend: detail is what a Gaussian of this sigma (px) removes; its local
# energy is compared over a Gaussian window of WINDOW px, and restored by at most MAX_GAIN.
DETAIL_SIGMA = 3.0
WINDOW = 16.0
MAX_GAIN = 3.0
ENERGY_SHRINK = 4


@dataclass(frozen=True)
class Temporal:
    """How a clip's frames are held together (module docstring).

    `stats_rate`: how far the statistics move towards each frame's, per frame (0: the first
    frame's for the whole clip); None: every frame its own, as photos. `blend`: the weight of the
    warped previous result on pixels the flow follows; 0: none. `align`: shift frames onto the
    network's grid by the camera's motion.
    """

    stats_rate: float | None
    blend: float
    align: bool

    @classmethod
    def from_stability(cls, stability: float) -> "Temporal":
        """`--stability`: 0 is every frame on its own; above, the statistics move by 1 - S a
        frame and the previous result keeps a weight of S where the flow follows the motion."""
        if not 0.0 <= stability <= 1.0:
            raise ValueError(f"stability must be in [0, 1], got {stability}")
        if stability == 0:
            return cls(None, 0.0, False)
        return cls(1.0 - stability, stability, True)

    @property
    def needs_flow(self) -> bool:
        return self.blend > 0 or self.align


class ClipStylizer:
    """Stylizes one clip's frames, in order, keeping what holds the next frame to this one: the
    moving statistics, the camera's accumulated motion, the previous frame and result.

    `strength` and `preserve_color` are applied to each result as `Stylizer.stylize` does; what
    is carried to the next frame is the network's own output.
    """

    def __init__(
        self,
        stylizer: Stylizer,
        temporal: Temporal,
        strength: float = 1.0,
        preserve_color: bool = False,
    ):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if temporal.stats_rate is not None and stylizer.overlap is None:
            raise StylenetError(
                f"{stylizer.path}: no statistics interface (a plain form?): use --stability 0"
            )
        self.stylizer, self.temporal = stylizer, temporal
        self.strength, self.preserve_color = strength, preserve_color
        self.flow = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self.index = 0
        self.stats: np.ndarray | None = None  # what the next frame is normalised with
        self.measured: np.ndarray | None = None  # the latest measurement (tiled frames)
        self.offset = np.zeros(2)  # how far the scene moved since the first frame, (y, x) px
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # (small grey, result)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The next uint8 HxWx3 frame of the clip, stylized, uint8 HxWx3."""
        small = shrink_grey(rgb) if self.temporal.needs_flow else None
        flow = tracked = None
        if small is not None and self.previous is not None:
            backward = self.flow.calc(small, self.previous[0], None)
            forward = self.flow.calc(self.previous[0], small, None)
            tracked = consistent(backward, forward)
            flow, tracked = _to_size(backward, tracked, rgb.shape[:2])
            # The camera's motion: the median flow, robust to things moving on their own.
            self.offset -= np.median(flow[::4, ::4].reshape(-1, 2), axis=0)[::-1]
        stylized = self._network(rgb)
        if flow is not None and self.previous is not None and self.temporal.blend > 0:
            warped = warp(self.previous[1], flow)
            stylized = blend(stylized, warped, self.temporal.blend * tracked)
        self.previous = None if small is None else (small, stylized)
        self.index += 1
        if self.strength == 1 and not self.preserve_color:
            return stylized
        original = rgb[None].astype(np.float32) / 255
        result = stylized[None].astype(np.float32) / 255
        return _finish(original, result, self.strength, self.preserve_color)[0]

    def _network(self, rgb: np.ndarray) -> np.ndarray:
        """The network's output for a frame as uint8 HxWx3, normalised with the clip's statistics
        (module docstring) and shifted onto the grid when aligning."""
        height, width = rgb.shape[:2]
        grid = self.stylizer.align
        top, left = 0, 0
        if self.temporal.align and grid > 1:
            top, left = (int(v) for v in np.round(-self.offset) % grid)
            # Padding the top and left by what the scene moved modulo the grid puts it back on the
            # first frame's grid; grid - 1 pixels in all: every frame has the same size.
            pad = ((top, grid - 1 - top), (left, grid - 1 - left), (0, 0))
            rgb = np.pad(rgb, pad, mode="reflect")
        tile = self.stylizer.tile_for(*rgb.shape[:2])
        if tile:
            out = self._tiled(rgb, tile)
        else:
            batch = rgb[None].astype(np.float32) / 255
            out = _finish(batch, self._whole(batch), 1.0, False)[0]
        return out[top : top + height, left : left + width]

    def _whole(self, batch: np.ndarray) -> np.ndarray:
        """A frame run whole, [1, H, W, 3] in [0, 1], its measurement folded into the clip's
        statistics for the next frame."""
        rate = self.temporal.stats_rate
        if rate is None:
            return self.stylizer.run(batch)
        out, measured = self.stylizer.run_and_measure(batch, self.stats)
        self._fold(measured)
        return out

    def _fold(self, measured: np.ndarray) -> None:
        """Move the clip's statistics by `stats_rate` towards a measurement (the first is taken
        as it is)."""
        rate = self.temporal.stats_rate
        self.stats = measured if self.stats is None else self.stats + rate * (measured - self.stats)

    def _tiled(self, rgb: np.ndarray, tile: int) -> np.ndarray:
        """A frame too large to run whole, in tiles normalised with the clip's statistics, or
        with the frame's own at `stats_rate` None."""
        rate = self.temporal.stats_rate
        if rate is None:
            return self.stylizer.stylize_tiled(rgb, tile)
        if self.measured is None or (rate > 0 and self.index % STATS_EVERY == 0):
            self.measured = self.stylizer.norm_stats(rgb)
        self._fold(self.measured)
        return self.stylizer.stylize_tiled(rgb, tile, stats=self.stats)


def shrink_grey(rgb: np.ndarray, side: int = FLOW_SIDE) -> np.ndarray:
    """The frame in grey, its longer side at most `side`: what the flow is computed on."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = side / max(grey.shape)
    if scale >= 1:
        return grey
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Where the backward flow (each pixel of a frame to where it was in the one before; HxWx2,
    x then y, px) can be trusted: the forward flow brings the pixel back to where it started,
    within the tolerance of Ruder et al. (2016, eq. 7 without the motion-boundary term), and it
    came from inside the frame. Occluded and uncovered pixels are not. Bool HxW."""
    returned = warp(forward, backward)
    loop = backward + returned
    trusted = (loop**2).sum(-1) <= 0.01 * ((backward**2).sum(-1) + (returned**2).sum(-1)) + 0.5
    height, width = backward.shape[:2]
    xs, ys = _grid(height, width)
    to_x, to_y = xs + backward[..., 0], ys + backward[..., 1]
    return trusted & (to_x >= 0) & (to_x <= width - 1) & (to_y >= 0) & (to_y <= height - 1)


def _to_size(
    flow: np.ndarray, trusted: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A flow and its trusted mask computed on a shrunk frame, at the full `size` (height,
    width): vectors scaled, the mask float32 (1.0 trusted)."""
    height, width = trusted.shape
    full_height, full_width = size
    if (full_height, full_width) != (height, width):
        scale = np.array([full_width / width, full_height / height], np.float32)
        # Scaled before it is enlarged: the same vectors, a seventh of the multiplications at 720p.
        flow = cv2.resize(flow * scale, (full_width, full_height))
        trusted = cv2.resize(trusted.astype(np.uint8), (full_width, full_height)) > 0
    return flow, trusted.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), float32 HxW each; cached (a clip's frames share a size), so
    read-only."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled at each pixel plus `flow` (bicubic: repeated warps blur less than with
    bilinear sampling; edges repeated)."""
    xs, ys = _grid(*flow.shape[:2])
    return cv2.remap(
        image,
        xs + flow[..., 0],
        ys + flow[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def blend(fresh: np.ndarray, warped: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """`fresh` and `warped` (uint8 HxWx3) mixed by `weight` (float32 HxW, that of `warped`), with
    the fine detail scaled back to `fresh`'s local energy where mixing two textures lowered it.
    In 8 bits with OpenCV's per-pixel blend: at 720p the blend is bound by memory traffic, and
    8 and 16-bit arrays carry less than half of float32's."""
    mixed = cv2.blendLinear(warped, fresh, weight, 1 - weight)
    base = smooth(mixed)
    detail = cv2.subtract(mixed, base, dtype=cv2.CV_16S)
    fresh_detail = cv2.subtract(fresh, smooth(fresh), dtype=cv2.CV_16S)
    gain = np.sqrt(local_energy(fresh_detail) / np.maximum(local_energy(detail), 1e-8))
    gain = cv2.resize(np.clip(gain, 1.0, MAX_GAIN), fresh.shape[1::-1])
    # base + gain * detail, as a blend of the mix and its base (the weights sum to 1; saturated)
    return cv2.blendLinear(mixed, base, gain, 1 - gain)


def smooth(image: np.ndarray) -> np.ndarray:
    """`image` blurred by about `DETAIL_SIGMA` px: OpenCV's stack blur, a tent-shaped kernel
    close to a Gaussian at about half of GaussianBlur's cost; a tent of radius r has a variance of
    r (r + 2) / 6."""
    radius = round((6 * DETAIL_SIGMA**2 + 1) ** 0.5 - 1)
    return cv2.stackBlur(image, (2 * radius + 1, 2 * radius + 1))


def local_energy(detail: np.ndarray) -> np.ndarray:
    """The squared `detail` (HxWx3) summed over channels and averaged over a Gaussian window of
    `WINDOW` px, at 1/`ENERGY_SHRINK` of the size: the window is wide, so the shrunk map loses
    nothing that matters and takes about a sixteenth of the time of blurring at full size."""
    height, width = detail.shape[:2]
    size = (max(1, width // ENERGY_SHRINK), max(1, height // ENERGY_SHRINK))
    squared = cv2.multiply(detail, detail, dtype=cv2.CV_32F)
    squared = cv2.resize(squared, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(squared.sum(-1), (0, 0), WINDOW / ENERGY_SHRINK)
