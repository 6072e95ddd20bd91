"""Videos: clips in and out with their frames, rate and audio; strokes held still; bad files."""

import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.video import pan, read_frames, temporal_error, write_clip
from helpers import PHOTOS
from stylenet.errors import StylenetError
from stylenet.runtime.cli import main
from stylenet.runtime.images import load_image
from stylenet.runtime.stylizer import Stylizer
from stylenet.runtime.temporal import DEFAULT_STABILITY, ClipStylizer, Temporal

FRAMES, RATE, AUDIO_SECONDS = 6, 12, 0.5


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer("starry_night")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return load_image(PHOTOS[0]).rgb


def clip_file(path: Path, scene: np.ndarray, audio_seconds: float = AUDIO_SECONDS) -> Path:
    """A short clip of a real photo panning, 80x64 px, with a tone as its audio track."""
    write_clip(path, pan(scene, (64, 80), FRAMES).frames, RATE, audio_seconds)
    return path


def streams(path: Path) -> dict:
    """What a test compares of a video file: frames, size, rate, audio codec and length."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = sum(1 for _ in container.decode(video=0))
        audio_seconds = float(audio.duration * audio.time_base) if audio else 0.0
        return {
            "frames": frames,
            "size": (video.width, video.height),
            "rate": video.average_rate,
            "audio": audio.codec_context.name if audio else None,
            "audio_seconds": round(audio_seconds, 3),
        }


def stylenet(*args: str | Path) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_a_clip_keeps_its_frames_size_rate_and_audio(scene: np.ndarray, tmp_path: Path):
    source = clip_file(tmp_path / "clip.mp4", scene)
    code, stdout, stderr = stylenet("stylize", source, "-o", tmp_path / "out")
    assert code == 0, stderr
    assert "1 stylized, 0 skipped, 0 failed" in stdout
    target = tmp_path / "out" / "clip_starry_night.mp4"
    before, after = streams(source), streams(target)
    assert before == after
    assert after["frames"] == FRAMES and after["size"] == (80, 64) and after["rate"] == RATE
    assert after["audio_seconds"] >= AUDIO_SECONDS
    inputs, outputs = read_frames(source), read_frames(target)
    changed = [np.abs(o.astype(int) - i).mean() for i, o in zip(inputs, outputs, strict=True)]
    assert min(changed) > 10  # painted
    assert [p.name for p in (tmp_path / "out").iterdir()] == [target.name]  # no temporary file


def test_max_size_and_the_python_api(stylizer: Stylizer, scene: np.ndarray, tmp_path: Path):
    source = clip_file(tmp_path / "clip.mp4", scene, audio_seconds=0)
    report = stylizer.stylize_video(source, tmp_path / "small.mkv", max_size=40, progress=False)
    assert (report.frames, report.width, report.height) == (FRAMES, 40, 32)
    assert streams(tmp_path / "small.mkv")["size"] == (40, 32)
    assert streams(tmp_path / "small.mkv")["audio"] is None


def turned_upright(path: Path) -> Path:
    """`path` (an MP4) as a phone held upright writes it: the pixels stored landscape, the track
    header's display matrix saying "turn 90 degrees clockwise". FFmpeg's muxer no longer takes
    the old `rotate` tag, so the matrix is written into the `tkhd` box directly."""
    data = bytearray(path.read_bytes())
    matrix = data.index(b"tkhd") + 4 + 40  # after version/flags, times, ids, layer, volume
    identity = struct.pack(">9i", 1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    assert data[matrix : matrix + 36] == identity
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def test_a_phone_clip_is_turned_as_players_show_it(tmp_path: Path):
    frames = [np.full((64, 80, 3), 40, np.uint8) for _ in range(FRAMES)]
    for frame in frames:
        frame[:16] = 220  # a bright band along the stored frame's top
    write_clip(tmp_path / "phone.mp4", frames, RATE)
    source = turned_upright(tmp_path / "phone.mp4")
    code, _, stderr = stylenet("stylize", source, "--strength", "0", "-o", tmp_path / "out")
    assert code == 0, stderr
    target = tmp_path / "out" / "phone_starry_night.mp4"
    assert streams(target)["size"] == (64, 80)  # portrait
    with av.open(str(target)) as container:
        first = next(container.decode(video=0))
    assert first.rotation == 0  # turned once, in the pixels, not again by the player
    # Turned clockwise, the stored top is the shown right side.
    columns = first.to_ndarray(format="rgb24").mean(axis=(0, 2))
    assert columns[-12:].min() > 200 and columns[:40].max() < 60, columns


def run_clip(stylizer: Stylizer, frames: list[np.ndarray], temporal: Temporal) -> list[np.ndarray]:
    clip = ClipStylizer(stylizer, temporal)
    return [clip(frame) for frame in frames]


def test_shared_statistics_hold_the_palette(stylizer: Stylizer, scene: np.ndarray):
    """A real photo's crop panning by 4 px a frame, the network's grid: the strokes move with
    the scene, so what changes per frame is mostly the statistics (a pan by 3 px repaints every
    stroke whatever the statistics: the next test). Measured as benchmarks/video.py measures."""
    clip = pan(scene, (96, 128), 8, step=4.0)
    per_frame = temporal_error(clip, run_clip(stylizer, clip.frames, Temporal.from_stability(0)))
    # The first frame's statistics for every frame, and a moving average of them.
    fixed = temporal_error(clip, run_clip(stylizer, clip.frames, Temporal(0.0, 0.0, False)))
    moving = temporal_error(clip, run_clip(stylizer, clip.frames, Temporal(0.1, 0.0, False)))
    # Measured on three held-out photos (PHOTOS[0], [3], [6]) with the bundled Starry Night:
    # 60-73% of the per-frame error remained with fixed statistics, 90-92% with a moving average
    # (the earlier Starry Night: 45-75%, 68-92%); statistics of each frame's own would keep 100%.
    assert fixed < 0.8 * per_frame and moving < 0.95 * per_frame, (per_frame, fixed, moving)


def test_after_a_cut_the_statistics_settle_on_the_new_scene(stylizer: Stylizer, scene: np.ndarray):
    """Each frame's own pass measures the clip's next statistics (`Stylizer.run_and_measure`):
    on a still scene after a cut they settle on that scene's own, as a separate statistics pass
    measures them, with no such pass. (Not monotonically: a deep layer's measurement moves while
    the layers before it settle; measured with the bundled Starry Night, 1.5 of the largest
    statistic after the first frame, 0.42 after the third, 0.005 after 16, below 0.001 from the
    23rd on.)"""
    before = scene[:96, :128]
    after = load_image(PHOTOS[1]).rgb[:96, :128]
    clip = ClipStylizer(stylizer, Temporal(0.5, 0.0, False))
    clip(before)
    own = stylizer.norm_stats(after)
    distances = []
    for _ in range(32):
        clip(after)
        distances.append(float(np.abs(clip.stats - own).max() / np.abs(own).max()))
    assert distances[0] > 0.05 and max(distances[-4:]) < 1e-3, distances


def test_frames_in_tiles_are_the_whole_frames(scene: np.ndarray):
    """A frame too large to run whole runs in tiles with the clip's statistics (measured by a
    statistics pass): on a still clip, the same frames as run whole."""
    frames = [scene[:128, :320]] * 3
    whole = run_clip(Stylizer("starry_night"), frames, Temporal.from_stability(DEFAULT_STABILITY))
    tiled = Stylizer("starry_night", tile=208)
    assert tiled.tile_for(*frames[0].shape[:2])
    in_tiles = run_clip(tiled, frames, Temporal.from_stability(DEFAULT_STABILITY))
    for a, b in zip(whole, in_tiles, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 2


def test_stability_holds_the_strokes_on_a_pan_and_a_zoom(stylizer: Stylizer, scene: np.ndarray):
    """The issue's bar: a third of the per-frame temporal error at most, on a 3 px pan; on a
    zoom, which the grid alignment cannot follow, the flow-guided blending must still help."""
    for clip, bar in [
        (pan(scene, (96, 128), 8, step=3.0), 1 / 3),
        (pan(scene, (96, 128), 8, step=1.0, zoom=0.02), 1 / 2),
    ]:
        per_frame = run_clip(stylizer, clip.frames, Temporal.from_stability(0))
        stable = run_clip(stylizer, clip.frames, Temporal.from_stability(DEFAULT_STABILITY))
        errors = temporal_error(clip, per_frame), temporal_error(clip, stable)
        assert errors[1] < bar * errors[0], errors


def bad_videos(folder: Path, scene: np.ndarray) -> dict[str, Path]:
    """Files that claim to be videos and are not usable ones."""
    folder.mkdir()
    good = clip_file(folder / "good.mp4", scene)
    files = {
        "corrupt": folder / "corrupt.mp4",
        "truncated": folder / "truncated.mov",
        "zero frames": folder / "zero.mkv",
        "audio only": folder / "audio.mp4",
        "empty": folder / "empty.webm",
    }
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(5000))
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    files["empty"].write_bytes(b"")
    with av.open(str(files["zero frames"]), "w") as output:  # Matroska keeps the empty stream
        video = output.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = output.add_stream("aac", rate=44100, layout="mono")
        write_audio_frame(output, audio)
        output.mux(video.encode(None))
    with av.open(str(files["audio only"]), "w") as output:
        write_audio_frame(output, output.add_stream("aac", rate=44100, layout="mono"))
    return files


def write_audio_frame(output: av.container.OutputContainer, stream: av.AudioStream) -> None:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
    frame.sample_rate = 44100
    output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def test_bad_videos_cost_one_line_each(scene: np.ndarray, tmp_path: Path):
    files = bad_videos(tmp_path / "in", scene)
    code, stdout, stderr = stylenet("stylize", *files.values(), "-o", tmp_path / "out")
    assert code == 1
    assert "Traceback" not in stderr
    failures = [line for line in stderr.splitlines() if "failed: " in line]
    assert len(failures) == len(files), stderr
    for name, reason in [
        ("corrupt", "not a video"),
        ("truncated", "not a video"),
        ("zero frames", "no frames in the video stream"),
        ("audio only", "no video stream"),
        ("empty", "empty file"),
    ]:
        assert any(f"{files[name]}: {reason}" in line for line in failures), (name, stderr)
    assert stdout.strip() == f"0 stylized, 0 skipped, {len(files)} failed -> {tmp_path / 'out'}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_nothing_is_overwritten(stylizer: Stylizer, scene: np.ndarray, tmp_path: Path):
    source = clip_file(tmp_path / "clip.mp4", scene)
    target = tmp_path / "clip_starry_night.mp4"
    target.write_bytes(b"precious")
    code, _, stderr = stylenet("stylize", source)
    assert code == 0 and "skipped" in stderr and target.read_bytes() == b"precious"
    with pytest.raises(StylenetError, match="exists"):
        stylizer.stylize_video(source, target, progress=False)
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", target.name]  # no temporary file left
    code, _, _ = stylenet("stylize", source, "--overwrite")
    assert code == 0 and streams(target)["frames"] == FRAMES


def test_a_folder_of_photos_and_videos(scene: np.ndarray, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    clip_file(folder / "clip.MOV", scene)
    (folder / "photo.jpg").write_bytes(PHOTOS[1].read_bytes())
    code, stdout, stderr = stylenet(
        "stylize", folder, "-o", tmp_path / "out", "--max-size", "64", "--stability", "0.8"
    )
    assert code == 0, stderr
    assert "2 stylized, 0 skipped, 0 failed" in stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip_starry_night.MOV",
        "photo_starry_night.jpg",
    ]
    assert streams(tmp_path / "out" / "clip_starry_night.MOV")["frames"] == FRAMES


def test_the_help_states_the_default_stability():
    _, stdout, _ = stylenet("stylize", "--help")
    assert f"Default: {DEFAULT_STABILITY:g}" in " ".join(stdout.split())
