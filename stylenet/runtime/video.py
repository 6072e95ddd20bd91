"""Stylizing video files (pip install 'stylenet[video]'): frames decoded, stylized and encoded one
at a time by PyAV (FFmpeg), so memory does not grow with the clip's length. The strokes are held
on the moving scene by `stylenet.runtime.temporal`. Frame rate and timestamps are kept, rotation
metadata is applied, and the audio packets are copied unchanged, or re-encoded when the output's
container cannot hold their codec.
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
from stylenet.runtime.stylizer import Stylizer
from stylenet.runtime.temporal import DEFAULT_STABILITY, ClipStylizer, Temporal

# Output containers by extension, with their video and audio codecs.
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_CODECS = {"webm": ("libvpx-vp9", "libopus")}
_DEFAULT_CODECS = ("libx264", "aac")


@dataclass
class VideoReport:
    """What `stylize_video` wrote: frames, their size, and notes for the user."""

    frames: int
    width: int
    height: int
    notes: list[str]


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
