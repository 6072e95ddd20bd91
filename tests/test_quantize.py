"""`stylenet quantize`: an int8 model close to the original, tileable, never over a file."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import DATA, PHOTOS
from stylenet.runtime.cli import main
from stylenet.runtime.stylizer import Stylizer


@pytest.fixture(scope="module")
def int8(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("int8") / "mosaic-int8.onnx"
    train = DATA / "photos" / "train"
    args = ["quantize", model, "--calibration", train, "-o", output, "--count", "8"]
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {output}: int8, calibrated on 8 photos from {train}"
    return output


def test_int8_model_stays_close_to_the_original(model: Path, int8: Path):
    """Held-out photos through the int8 copy are within 24 dB PSNR of the float model.

    This is the tests' random-weight network (25-26 dB on these photos); the trained full-width
    starry_night network measured 28.9 dB on average, 26.5 dB at worst, on 8 held-out photos.
    """
    graph = onnx.load(int8).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    assert int8.stat().st_size < model.stat().st_size
    # Every kernel but the first and last is stored int8, none quantized again at each run: export
    # folds the kernels it derives (phase convolutions) into initializers.
    made_by = {output: node for node in graph.node for output in node.output}
    stored = {init.name: init.data_type for init in graph.initializer}
    inner = [node for node in graph.node if node.op_type == "Conv"][1:-1]
    kernels = [made_by[conv.input[1]].input[0] for conv in inner]  # DequantizeLinear's input
    assert inner and all(stored.get(kernel) == onnx.TensorProto.INT8 for kernel in kernels)
    original, quantized = Stylizer(model, threads=1), Stylizer(int8, threads=1)
    assert quantized.metadata["style_name"] == "mosaic" and "quantization" in quantized.metadata
    for path in PHOTOS[:4]:
        photo = np.asarray(Image.open(path).convert("RGB"))
        error = np.mean((quantized.stylize(photo).astype(float) - original.stylize(photo)) ** 2)
        assert 10 * np.log10(255**2 / error) >= 24, path


def test_int8_model_can_be_tiled(int8: Path):
    stylizer = Stylizer(int8, threads=1, tile=256)
    photo = np.asarray(Image.open(PHOTOS[0]).convert("RGB"))  # 481 x 321: 2 x 2 tiles
    assert stylizer.tile_for(*photo.shape[:2]) == 256
    assert stylizer.stylize(photo).shape == photo.shape


def test_refusals_are_one_line(model: Path, int8: Path, tmp_path: Path):
    before = int8.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "x.onnx"
    cases = [
        ([model, "--calibration", DATA, "-o", int8], f"{int8} exists (--overwrite to replace it)"),
        ([model, "--calibration", empty, "-o", out], f"no readable photos in {empty}"),
        ([model, "--calibration", tmp_path / "no", "-o", out], "folder not found"),
        ([tmp_path / "no.onnx", "--calibration", DATA, "-o", out], "not found"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["quantize", *map(str, args)])
        assert result.exit_code == 1 and message in result.stderr
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert int8.read_bytes() == before and not out.exists()


def test_without_onnx_says_what_to_install(model: Path, tmp_path: Path, monkeypatch):
    """The runtime install has no onnx package, which onnxruntime.quantization needs."""
    for name in [m for m in sys.modules if m.startswith(("onnx", "stylenet.runtime.quantize"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails
    result = CliRunner().invoke(
        main, ["quantize", str(model), "--calibration", str(DATA), "-o", str(tmp_path / "x.onnx")]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: stylenet quantize needs the onnx package: pip install 'stylenet[quantize]'\n"
    )
