"""The `stylenet` command end to end: real photos, messy inputs, no overwrite, no torch."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from helpers import AMBER, PHOTOS, messy_inputs
from stylenet.runtime.cli import main
from stylenet.runtime.styles import DEFAULT_STYLE
from stylenet.runtime.stylizer import Stylizer
from stylenet.runtime.tiling import AUTO_TILE_PIXELS, TILE


def stylenet(*args: str | Path) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_real_photos_in_a_fresh_process_without_torch(model: Path, tmp_path: Path):
    """As users run it; torch must not be imported (the runtime install has none)."""
    check_torch = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
        "from stylenet.runtime.cli import main\n"
        "main()\n"
    )
    photos = PHOTOS[:3]
    out = tmp_path / "out"
    args = ["stylize", *photos, AMBER, "--model", model, "-o", out, "--max-size", "400"]
    result = subprocess.run(
        [sys.executable, "-c", check_torch, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert "4 stylized, 0 skipped, 0 failed" in result.stdout
    for photo in [*photos, AMBER]:
        output = out / f"{photo.stem}_mosaic.jpg"
        source = Image.open(photo).convert("RGB")
        source.thumbnail((400, 400))
        with Image.open(output) as image:
            assert image.format == "JPEG" and image.size == source.size
            assert np.abs(np.asarray(image, dtype=int) - np.asarray(source)).mean() > 5


def test_messy_folder(model: Path, tmp_path: Path):
    files = messy_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code, stdout, stderr = stylenet("stylize", tmp_path / "in", "-m", model, "-o", out)
    assert code == 1
    failures = [line for line in stderr.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 4
    for name, reason in [
        ("empty", "empty file"),
        ("truncated", "truncated or corrupt"),
        ("text", "not an image"),
        ("bomb", "decompression bomb"),
    ]:
        assert any(str(files[name]) in line and reason in line for line in failures), name
    assert "Traceback" not in stderr
    assert any(
        f"note: {files['animated']}: 3 frames: used the first" in x for x in stderr.split("\n")
    )
    assert stdout.strip() == f"7 stylized, 0 skipped, 4 failed -> {out}"

    def output(name: str) -> Image.Image:
        return Image.open(out / f"{files[name].stem}_mosaic{files[name].suffix}")

    assert output("rotated").size == (40, 60)  # EXIF orientation applied
    assert output("rgba").mode == "RGBA" and output("rgba").size == (48, 32)
    assert output("palette").convert("RGBA").getchannel("A").getextrema() == (0, 255)
    assert output("tiny").size == (3, 2)
    assert output("cmyk").mode == "RGB" and output("gray16").size == (64, 32)
    assert output("animated").size == (24, 16)


def test_existing_outputs_are_skipped_unless_overwrite(model: Path, tmp_path: Path):
    out = tmp_path / "out"
    code, _, _ = stylenet("stylize", PHOTOS[0], "-m", model, "-o", out)
    target = out / f"{PHOTOS[0].stem}_mosaic.jpg"
    first = target.read_bytes()
    code, stdout, stderr = stylenet(
        "stylize", PHOTOS[0], "-m", model, "-o", out, "--strength", "0.3"
    )
    assert code == 0 and "0 stylized, 1 skipped, 0 failed" in stdout
    assert f"skipped: {PHOTOS[0]}: {target} exists" in stderr
    assert target.read_bytes() == first
    code, stdout, _ = stylenet(
        "stylize", PHOTOS[0], "-m", model, "-o", out, "--strength", "0.3", "--overwrite"
    )
    assert code == 0 and "1 stylized" in stdout and target.read_bytes() != first
    assert sorted(p.name for p in out.iterdir()) == [target.name]  # no temporary files left


def test_folders_globs_format_and_options(model: Path, tmp_path: Path):
    tree = tmp_path / "trip"
    (tree / "day2").mkdir(parents=True)
    for photo, folder in zip(PHOTOS[:3], [tree, tree, tree / "day2"], strict=True):
        Image.open(photo).crop((0, 0, 64, 48)).save(folder / photo.name)
    out = tmp_path / "out"
    code, stdout, _ = stylenet("stylize", tree, "-m", model, "-o", out, "--format", "png")
    assert code == 0 and "2 stylized" in stdout  # subfolders only with --recursive
    code, stdout, _ = stylenet(
        "stylize", tree, "-m", model, "-o", out, "--recursive", "--format", "png"
    )
    assert "1 stylized, 2 skipped" in stdout
    assert (out / "day2" / f"{PHOTOS[2].stem}_mosaic.png").is_file()  # tree mirrored

    code, stdout, _ = stylenet(
        "stylize", str(tree / "*.jpg"), "-m", model, "-o", tmp_path / "glob", "--preserve-color"
    )
    assert code == 0 and "2 stylized" in stdout
    plain = Image.open(out / f"{PHOTOS[0].stem}_mosaic.png").convert("YCbCr")
    kept = Image.open(tmp_path / "glob" / f"{PHOTOS[0].stem}_mosaic.jpg").convert("YCbCr")
    source = Image.open(tree / PHOTOS[0].name).convert("YCbCr")
    chroma_error = [
        np.abs(np.asarray(i, float)[..., 1:] - np.asarray(source, float)[..., 1:]).mean()
        for i in (plain, kept)
    ]
    assert chroma_error[1] < chroma_error[0] / 2

    code, stdout, stderr = stylenet("stylize", str(tree / "*.png"), "-m", model, "-o", out)
    assert code == 1 and "no file matches" in stderr
    code, _, stderr = stylenet("stylize", tree, "-m", model, "-o", out, "--format", "xyz")
    assert code == 2 and "cannot write 'xyz' files" in stderr


def peak_rss_mb(*args: str | Path) -> float:
    """Run the CLI in a fresh process and return its peak resident memory in MB.

    Through a wrapper process whose only child is the CLI: RUSAGE_CHILDREN of pytest itself
    would include every subprocess run before.
    """
    wrapper = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    stylenet_command = [sys.executable, "-c", "from stylenet.runtime.cli import main; main()"]
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *stylenet_command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]) / 1024  # Linux reports kB


def test_huge_inputs_are_tiled_automatically_in_bounded_memory(model: Path, tmp_path: Path):
    """A photo above AUTO_TILE_PIXELS runs in tiles of TILE without --tile, in a fraction of the
    memory of the same photo whole (--tile 0)."""
    photo = tmp_path / "huge.png"
    Image.open(PHOTOS[0]).convert("RGB").resize((2200, 2000), Image.Resampling.BICUBIC).save(photo)
    assert AUTO_TILE_PIXELS < 2200 * 2000
    common = ["stylize", photo, "-m", model, "--threads", "1", "--format", "png", "-o"]
    tiled_mb = peak_rss_mb(*common, tmp_path / "tiled")
    whole_mb = peak_rss_mb(*common, tmp_path / "whole", "--tile", "0")
    assert tiled_mb < whole_mb / 2, (tiled_mb, whole_mb)
    tiled, whole = (
        np.asarray(Image.open(tmp_path / folder / "huge_mosaic.png"))
        for folder in ("tiled", "whole")
    )
    expected = Stylizer(model, threads=1, tile=TILE).stylize(Image.open(photo))
    assert np.array_equal(tiled, np.asarray(expected)) and not np.array_equal(tiled, whole)


def test_tile_option(model: Path, tmp_path: Path):
    out = tmp_path / "out"
    code, stdout, _ = stylenet("stylize", AMBER, "-m", model, "-o", out, "--tile", "300")
    assert code == 0 and "1 stylized" in stdout
    assert Image.open(out / "amber_mosaic.jpg").size == (1080, 1080)
    code, _, stderr = stylenet("stylize", AMBER, "-m", model, "-o", out, "--tile", "100")
    assert code == 1
    assert (
        stderr.strip()
        == "Error: tile must be 0 (no tiling) or at least 112 pixels for this model, got 100"
    )


def test_bad_model_is_one_line(tmp_path: Path):
    code, _, stderr = stylenet("stylize", PHOTOS[0], "-m", tmp_path / "nope.onnx", "-o", tmp_path)
    assert code == 1 and stderr.strip() == f"Error: {tmp_path / 'nope.onnx'}: model file not found"


def test_info_is_a_short_card_and_verbose_has_everything(model: Path):
    code, stdout, _ = stylenet("info", model)
    assert code == 0
    size = model.stat().st_size
    lines = stdout.splitlines()
    assert lines[0] == f"mosaic: {model} ({size / 1e6:.1f} MB, {size} bytes)"
    assert lines[1] == "Mosaic, unknown (unknown); unknown"  # as much card as the test model has
    assert lines[2].startswith("network: 8 x 1 (2 stages), 1234 steps at 256 px")
    assert lines[3] == "trained with: python train.py style=mosaic"
    assert len(lines) == 4 and "training_config" not in stdout
    code, stdout, _ = stylenet("info", model, "--verbose")
    assert code == 0
    assert "input: image tensor(float) [batch, 3, height, width]" in stdout
    assert "output: stylized tensor(float) [batch, 3, height, width]" in stdout
    assert "style_name: mosaic" in stdout and "training_steps: 1234" in stdout
    assert '"num_res_blocks": 1' in stdout
    assert '"image": "mosaic.jpg"' in stdout  # no path of the training machine


def test_default_style_writes_beside_the_photo_and_never_overwrites(bundled, tmp_path: Path):
    photo = tmp_path / "photo.jpg"
    Image.open(PHOTOS[0]).save(photo)
    code, stdout, _ = stylenet("stylize", photo)
    # The test model's own name ("mosaic") names results; a bundled one is named after its style.
    result = tmp_path / "photo_mosaic.jpg"
    assert code == 0 and stdout.strip() == "1 stylized, 0 skipped, 0 failed -> beside the inputs"
    with Image.open(result) as image, Image.open(photo) as original:
        assert image.size == original.size
    before = result.read_bytes()
    code, stdout, stderr = stylenet("stylize", photo, "--style", "wave", "--strength", "0.5")
    assert code == 0 and "0 stylized, 1 skipped" in stdout and "exists" in stderr
    assert result.read_bytes() == before


def test_a_folder_rerun_without_output_skips_its_own_results(bundled, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS[:2]:
        Image.open(photo).crop((0, 0, 64, 48)).save(folder / photo.name)
    assert stylenet("stylize", folder)[0] == 0
    code, stdout, _ = stylenet("stylize", folder)
    assert code == 0 and "0 stylized, 2 skipped" in stdout  # not 2 more of *_mosaic_mosaic
    assert len(list(folder.iterdir())) == 4


def test_style_names_and_model_files(bundled, tmp_path: Path):
    code, _, stderr = stylenet("stylize", PHOTOS[0], "--style", "starry")
    assert code == 1
    assert stderr.strip() == (
        f"Error: unknown style 'starry'; bundled styles: {DEFAULT_STYLE}, wave "
        "(or a path to an .onnx)"
    )
    # With a model file, --style names one of that model's styles: this one holds only its own.
    code, _, stderr = stylenet("stylize", PHOTOS[0], "--style", "wave", "-m", bundled / "wave.onnx")
    assert code == 1 and stderr.strip().endswith("has no style 'wave'; its styles: mosaic")
    assert Stylizer("wave").path == bundled / "wave.onnx"
    assert Stylizer().path == bundled / f"{DEFAULT_STYLE}.onnx"
    stylized = Stylizer("wave", threads=1).stylize(PHOTOS[0])  # a path works as well as an image
    assert stylized.size == Image.open(PHOTOS[0]).size


def test_styles_lists_every_bundled_style_with_its_card(bundled):
    code, stdout, _ = stylenet("styles")
    assert code == 0
    blocks = stdout.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [f"{DEFAULT_STYLE} (default)", "wave"]
    assert all(block.splitlines()[1].startswith("  Mosaic, unknown") for block in blocks)


def test_export_plain_writes_the_deployment_graph(bundled, tmp_path: Path):
    import onnxruntime as ort

    out = tmp_path / "wave-plain.onnx"
    code, stdout, _ = stylenet("export-plain", "wave", "-o", out, "--size", "64x48")
    assert (
        code == 0 and stdout.strip() == f"wrote {out}: the plain form of wave, 64x48 px images only"
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [arg.name for arg in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == [1, 3, 48, 64]
    code, _, stderr = stylenet("export-plain", "wave", "-o", out)
    assert code == 1 and "exists" in stderr and "\n" not in stderr.strip()
    code, _, stderr = stylenet("export-plain", "wave", "-o", out, "--size", "64by48")
    assert code == 2 and "expected WIDTHxHEIGHT" in stderr
