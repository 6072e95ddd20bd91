"""Stylizing video files with strokes that stay on the scene (pip install 'stylenet[video]').

Stylized frame by frame, a clip shimmers: every stroke is repainted on every frame. Three things
hold the strokes still, each measured in benchmarks/video.py (docs/video.md has the figures):

- Statistics. Instance normalisation renormalises every frame with its own statistics; here they
  are an exponential moving average over the clip (`Stylizer.norm_stats`, measured every
  `STATS_EVERY` frames), so the palette and contrast drift with the scene instead of jumping.
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
"Artistic style transfer for videos". Frames are decoded, stylized and encoded one at a time by
PyAV (FFmpeg): memory does not grow with the clip's length. The audio packets are copied
unchanged, or re-encoded when the output's container cannot hold their codec.
"""

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from stylenet.errors import StylenetError
from stylenet.runtime.images import write_atomically
from stylenet.runtime.stylizer import Stylizer, _finish
from stylenet.runtime.tiling import stylize_in_tiles

# 0: every frame on its own; 1: the first frame's statistics and strokes carried as far as the
# motion can be followed. 0.9 measured best: a tenth of the per-frame temporal error on a pan with
# the style error within 5% (benchmarks/video.py).
DEFAULT_STABILITY = 0.95
# The statistics pass costs as much as stylizing a frame: measured every few frames only.
STATS_EVERY = 4
# Optical flow runs on frames shrunk to this longer side: 720p costs a sixth as much, and the
# strokes are blended, not tracked to the pixel.
FLOW_SIDE = 640
# Variance-preserving blend: detail is what a Gaussian of this sigma (px) removes; its local
# energy is compared over a Gaussian window of WINDOW px, and restored by at most MAX_GAIN.
DETAIL_SIGMA = 3.0
WINDOW = 16.0
MAX_GAIN = 3.0
# Output containers by extension, with their video and audio codecs.
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_CODECS = {"webm": ("libvpx-vp9", "libopus")}
_DEFAULT_CODECS = ("libx264", "aac")


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


@dataclass
class VideoReport:
    """What `stylize_video` wrote: frames, their size, and notes for the user."""

    frames: int
    width: int
    height: int
    notes: list[str]


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
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.index = 0
        self.stats: np.ndarray | None = None
        self.measured: np.ndarray | None = None
        self.offset = np.zeros(2)  # how far the scene moved since the first frame, (y, x) px
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # (small grey, result)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The next uint8 HxWx3 frame of the clip, stylized, uint8 HxWx3."""
        small = _shrink_grey(rgb) if self.temporal.needs_flow else None
        flow = tracked = None
        if small is not None and self.previous is not None:
            flow, tracked = _backward_flow(self.flow, self.previous[0], small, rgb.shape[:2])
            # The camera's motion: the median flow, robust to things moving on their own.
            self.offset -= np.median(flow[::4, ::4].reshape(-1, 2), axis=0)[::-1]
        stylized = self._network(rgb, self._statistics(rgb))
        if flow is not None and self.previous is not None and self.temporal.blend > 0:
            warped = warp(self.previous[1], flow)
            stylized = blend(stylized, warped, self.temporal.blend * tracked)
        self.previous = None if small is None else (small, stylized)
        self.index += 1
        original = rgb[None].astype(np.float32) / 255
        return _finish(original, stylized[None], self.strength, self.preserve_color)[0]

    def _statistics(self, rgb: np.ndarray) -> np.ndarray | None:
        """The statistics this frame is normalised with; None: its own."""
        rate = self.temporal.stats_rate
        tiled = self.stylizer.tile_for(*rgb.shape[:2]) is not None
        if rate is None:
            return self.stylizer.norm_stats(rgb) if tiled else None
        if self.stats is None or (rate > 0 and self.index % STATS_EVERY == 0):
            self.measured = self.stylizer.norm_stats(rgb)
        if self.stats is None or self.measured is None:
            self.stats = self.measured
        else:
            self.stats = self.stats + rate * (self.measured - self.stats)
        return self.stats

    def _network(self, rgb: np.ndarray, stats: np.ndarray | None) -> np.ndarray:
        """The network's float HxWx3 output for a frame, shifted onto the grid when aligning."""
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
            stylizer = self.stylizer

            def run(window: np.ndarray) -> np.ndarray:
                return _finish(window, stylizer.run(window, stats), 1.0, False)

            out = stylize_in_tiles(rgb, tile, stylizer.overlap, grid, run)
            out = out.astype(np.float32) / 255
        else:
            out = self.stylizer.run(rgb[None].astype(np.float32) / 255, stats)[0]
        return out[top : top + height, left : left + width]


def _shrink_grey(rgb: np.ndarray) -> np.ndarray:
    """The frame in grey, its longer side at most `FLOW_SIDE`: what the flow is computed on."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = FLOW_SIDE / max(grey.shape)
    if scale >= 1:
        return grey
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _backward_flow(
    dis: cv2.DISOpticalFlow, before: np.ndarray, after: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(flow, tracked) at full `size` (height, width): where each pixel of `after` was in
    `before` (HxWx2, x then y, pixels), and 1.0 where that is trusted, else 0.0.

    A pixel is trusted when the forward flow brings it back to where it started, within the
    tolerance of Ruder et al. (2016, eq. 7 without the motion-boundary term) and inside the
    frame: occluded and uncovered pixels are not.
    """
    backward = dis.calc(after, before, None)
    forward = dis.calc(before, after, None)
    returned = warp(forward, backward)
    loop = backward + returned
    trusted = (loop**2).sum(-1) <= 0.01 * ((backward**2).sum(-1) + (returned**2).sum(-1)) + 0.5
    height, width = after.shape
    xs, ys = _grid(height, width)
    to_x, to_y = xs + backward[..., 0], ys + backward[..., 1]
    trusted &= (to_x >= 0) & (to_x <= width - 1) & (to_y >= 0) & (to_y <= height - 1)
    full_height, full_width = size
    if (full_height, full_width) != (height, width):
        scale = np.array([full_width / width, full_height / height], np.float32)
        backward = cv2.resize(backward, (full_width, full_height)) * scale
        trusted = cv2.resize(trusted.astype(np.uint8), (full_width, full_height)) > 0
    return backward, trusted.astype(np.float32)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), float32 HxW each."""
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


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
    """`fresh` and `warped` (float HxWx3) mixed by `weight` (HxW, that of `warped`), with the
    fine detail scaled back to `fresh`'s local energy where mixing two textures lowered it."""
    mixed = fresh + weight[..., None] * (warped - fresh)
    base = cv2.GaussianBlur(mixed, (0, 0), DETAIL_SIGMA)
    detail = mixed - base
    fresh_detail = fresh - cv2.GaussianBlur(fresh, (0, 0), DETAIL_SIGMA)
    energy = cv2.GaussianBlur((detail * detail).sum(-1), (0, 0), WINDOW)
    target = cv2.GaussianBlur((fresh_detail * fresh_detail).sum(-1), (0, 0), WINDOW)
    gain = np.clip(np.sqrt(target / np.maximum(energy, 1e-8)), 1.0, MAX_GAIN)
    return np.clip(base + gain[..., None] * detail, 0.0, 1.0)


def stylize_video(
    stylizer: Stylizer,
    source: str | Path,
    target: str | Path,
    stability: float | None = None,
    max_size: int | None = None,
    strength: float = 1.0,
    preserve_color: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> VideoReport:
    """Stylize the video file `source` into `target` (.mp4, .m4v, .mov, .mkv or .webm), frame
    rate, timing and audio kept, rotation applied, written atomically and never over an existing
    file unless `overwrite`.

    `stability` in [0, 1] (default `DEFAULT_STABILITY`): see `Temporal.from_stability`.
    `max_size` bounds the longer side of the frames. `progress`: a bar on stderr. Raises
    StylenetError (without the file name: the caller names it) for a missing, empty, corrupt or
    unsupported file, one without a video stream, or one whose video has no frame.
    """
    source, target = Path(source), Path(target)
    container_format = FORMATS.get(target.suffix.lower())
    if container_format is None:
        known = ", ".join(FORMATS)
        raise StylenetError(f"cannot write {target.suffix or 'extension-less'} videos ({known})")
    stability = DEFAULT_STABILITY if stability is None else stability
    clip = ClipStylizer(stylizer, Temporal.from_stability(stability), strength, preserve_color)
    reports: list[VideoReport] = []

    def write(path: Path) -> None:
        with _open_video(source) as container, av.open(str(path), "w", container_format) as output:
            bar = tqdm(
                total=_frame_count(container.streams.video[0]) or None,
                unit="frame",
                desc=source.name,
                disable=not progress,
                leave=False,
            )
            with bar:
                reports.append(_transcode(container, output, clip, max_size, bar))

    try:
        write_atomically(target, write, overwrite)
    except av.FFmpegError as e:
        raise StylenetError(f"corrupt or unsupported video ({_reason(e)})") from None
    return reports[0]


def _open_video(path: Path) -> av.container.InputContainer:
    """The file opened for decoding, or a one-line StylenetError saying why it cannot be."""
    try:
        if path.stat().st_size == 0:
            raise StylenetError("empty file")
        container = av.open(str(path))
    except FileNotFoundError:
        raise StylenetError("no such file") from None
    except IsADirectoryError:
        raise StylenetError("is a directory") from None
    except av.FFmpegError as e:
        raise StylenetError(f"not a video, or a format FFmpeg cannot read ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise StylenetError("no video stream in this file")
    return container


def _reason(error: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    return str(getattr(error, "strerror", None) or error).split(": '")[0]


def _frame_count(stream: av.video.stream.VideoStream) -> int:
    """The stream's frame count as the container states it, else estimated from its duration
    (for the progress bar only); 0 when unknown."""
    if stream.frames:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return round(float(stream.duration * stream.time_base * rate))
    return 0


def _transcode(
    container: av.container.InputContainer,
    output: av.container.OutputContainer,
    clip: ClipStylizer,
    max_size: int | None,
    bar: tqdm,
) -> VideoReport:
    """Decode, stylize and encode the first video stream frame by frame, the first audio stream
    packet by packet. The output's streams are added at the first frame, whose size (after
    rotation and `max_size`) they need; audio packets before it wait for it."""
    video_in = container.streams.video[0]
    video_in.thread_type = "AUTO"
    audio_in = container.streams.audio[0] if container.streams.audio else None
    notes: list[str] = []
    encoder: _VideoEncoder | None = None
    audio: _Audio | None = None
    waiting: list[av.Packet] = []
    for packet in container.demux(*[s for s in (video_in, audio_in) if s is not None]):
        if packet.stream is audio_in:
            if audio is None:
                waiting.append(packet)
            else:
                audio.add(packet)
            continue
        for frame in packet.decode():
            rgb = _upright(frame, max_size)
            if encoder is None:
                encoder = _VideoEncoder(output, video_in, rgb.shape[:2], frame.rotation, notes)
                audio = _Audio(output, audio_in, notes) if audio_in is not None else None
                for early in waiting if audio is not None else []:
                    audio.add(early)
                waiting.clear()
            encoder.add(clip(encoder.fit(rgb)), frame.pts)
            bar.update()
    if encoder is None:
        raise StylenetError("no frames in the video stream")
    encoder.close()
    if audio is not None:
        audio.close()
    return VideoReport(encoder.frames, encoder.width, encoder.height, notes)


def _upright(frame: av.VideoFrame, max_size: int | None) -> np.ndarray:
    """A decoded frame as uint8 RGB, turned as players show it (the display matrix's rotation,
    e.g. a phone held upright) and shrunk to `max_size`."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    if max_size is not None and max(rgb.shape[:2]) > max_size:
        scale = max_size / max(rgb.shape[:2])
        size = (max(2, round(rgb.shape[1] * scale)), max(2, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb


class _VideoEncoder:
    """The output's video stream: the input's frame rate and timestamps, 4:2:0 colour (what
    every player takes), H.264 (VP9 in WebM) at a quality where the strokes show no blocks."""

    def __init__(
        self,
        output: av.container.OutputContainer,
        source: av.video.stream.VideoStream,
        size: tuple[int, int],
        rotation: int,
        notes: list[str],
    ):
        self.output = output
        # 4:2:0 needs even sizes: an odd row or column is dropped.
        self.height, self.width = size[0] // 2 * 2, size[1] // 2 * 2
        if (self.height, self.width) != size:
            notes.append(f"{size[1]}x{size[0]} px: cropped to {self.width}x{self.height} (even)")
        if rotation:
            notes.append(f"rotated by {rotation} degrees as players show it")
        codec = _CODECS.get(output.format.name, _DEFAULT_CODECS)[0]
        rate = source.average_rate or source.guessed_rate or Fraction(25)
        self.stream = output.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.time_base = source.time_base or 1 / Fraction(rate)
        self.stream.codec_context.time_base = self.time_base
        self.stream.options = (
            {"crf": "18", "preset": "veryfast"}
            if codec == "libx264"
            else {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"}
        )
        self.step = max(1, round(1 / (rate * self.time_base)))
        self.frames = 0
        self.last: int | None = None

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """The frame at the stream's size: odd edges cropped; a clip whose size changes midway
        is scaled to its first frame's."""
        if (
            rgb.shape[0] < self.height
            or rgb.shape[1] < self.width
            or (rgb.shape[0] > self.height + 1 or rgb.shape[1] > self.width + 1)
        ):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb[: self.height, : self.width])

    def add(self, rgb: np.ndarray, pts: int | None) -> None:
        """Encode one stylized frame at the input frame's timestamp (kept increasing)."""
        if pts is None or (self.last is not None and pts <= self.last):
            pts = 0 if self.last is None else self.last + self.step
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        self.output.mux(self.stream.encode(frame))
        self.last = pts
        self.frames += 1

    def close(self) -> None:
        self.output.mux(self.stream.encode(None))


class _Audio:
    """The input's first audio stream: its packets copied unchanged, or decoded and re-encoded
    (AAC; Opus in WebM) where the output's container cannot hold its codec."""

    def __init__(
        self, output: av.container.OutputContainer, source: av.audio.stream.AudioStream, notes
    ):
        self.output = output
        codec = source.codec_context.name
        self.copy = codec in output.supported_codecs
        if self.copy:
            self.stream = output.add_stream_from_template(source)
            return
        target = _CODECS.get(output.format.name, _DEFAULT_CODECS)[1]
        rate = 48000 if target == "libopus" else source.rate
        self.stream = output.add_stream(target, rate=rate, layout=source.layout.name)
        notes.append(
            f"audio re-encoded from {codec} to {target} ({output.format.name} cannot hold it)"
        )

    def add(self, packet: av.Packet) -> None:
        if not self.copy:
            for frame in packet.decode():
                frame.pts = None  # the encoder numbers its own samples
                self.output.mux(self.stream.encode(frame))
        elif packet.dts is not None:  # not the demuxer's empty flush packet
            packet.stream = self.stream
            self.output.mux(packet)

    def close(self) -> None:
        if not self.copy:
            self.output.mux(self.stream.encode(None))
