"""The plain form: `image` in, `stylized` out, nothing OpenCV refuses, the model's pixels."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import run_export
from stylenet.errors import StylenetError
from stylenet.runtime.plain import plain_graph, plain_model
from stylenet.runtime.stylizer import Stylizer

SIZE = (67, 45)  # odd: the folded padding and cropping must be this size's


@pytest.fixture(scope="module")
def exported(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """export.py plain=true, of any size and of SIZE, from the checkpoint of `model`."""
    folder = tmp_path_factory.mktemp("plain")
    ckpt = f"ckpt={model.with_name('small.ckpt')}"
    run_export(ckpt, f"output={folder / 'any.onnx'}", "plain=true")
    run_export(ckpt, f"output={folder / 'fixed.onnx'}", "plain=true", f"size=[{SIZE[0]},{SIZE[1]}]")
    return {"any": folder / "any.onnx", "fixed": folder / "fixed.onnx"}


def bool_or_optional(model: onnx.ModelProto) -> list[str]:
    """Every value, initializer and attribute of BOOL or optional type, shapes inferred."""
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    values = [*graph.input, *graph.output, *graph.value_info]
    found = [
        v.name
        for v in values
        if v.type.HasField("optional_type") or v.type.tensor_type.elem_type == onnx.TensorProto.BOOL
    ]
    found += [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.BOOL]
    for node in graph.node:
        for attr in node.attribute:
            if (
                attr.name == "to" and attr.i == onnx.TensorProto.BOOL
            ) or attr.t.data_type == onnx.TensorProto.BOOL:
                found.append(f"{node.op_type} {attr.name}")
    return found


def run(path: Path, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["stylized"], {"image": image})[0]


@pytest.mark.parametrize("form", ["any", "fixed"])
def test_export_writes_image_in_stylized_out_only(model: Path, exported: dict, form: str):
    proto = onnx.load(exported[form])
    graph = proto.graph
    assert [v.name for v in graph.input] == ["image"]
    assert [v.name for v in graph.output] == ["stylized"]
    assert proto.ir_version == 8
    assert bool_or_optional(proto) == []
    ops = {node.op_type for node in graph.node}
    assert not ops & {"If", "Where", "OptionalHasElement", "OptionalGetElement"}
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 3, "height", "width"] if form == "any" else [1, 3, *SIZE])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["style_name"] == "mosaic" and meta["convention"].startswith("plain form")
    shapes = [(2, 33, 65), (1, 5, 7)] if form == "any" else [(1, *SIZE)]
    for shape in shapes:
        image = np.random.default_rng(0).random((shape[0], 3, *shape[1:]), dtype=np.float32)
        assert np.abs(run(exported[form], image) - run(model, image)).max() < 1e-5


def test_fixed_size_form_has_no_shape_arithmetic(exported: dict):
    """What OpenCV 4 refuses is gone: shape computations (folded), Unsqueeze on several axes."""
    graph = onnx.load(exported["fixed"]).graph
    ops = {node.op_type for node in graph.node}
    assert not ops & {"Shape", "Gather", "Concat", "Max", "Mod", "Div"}
    axes = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    unsqueezes = [node for node in graph.node if node.op_type == "Unsqueeze"]
    assert unsqueezes and all(axes[node.input[1]].size == 1 for node in unsqueezes)


def test_fixed_size_form_runs_in_opencv(model: Path, exported: dict):
    cv2 = pytest.importorskip("cv2", reason="OpenCV not installed (pip install 'stylenet[dev]')")
    image = np.random.default_rng(1).random((1, 3, *SIZE), dtype=np.float32)
    net = cv2.dnn.readNetFromONNX(str(exported["fixed"]))
    net.setInput(image)
    assert np.abs(net.forward() - run(model, image)).max() < 1e-3


def test_stylizer_runs_plain_forms_whole(model: Path, exported: dict):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    expected = Stylizer(model, threads=1).stylize(photo)
    for form in ("any", "fixed"):
        stylizer = Stylizer(exported[form], threads=1)
        assert stylizer.tile_for(4000, 4000) is None  # no statistics interface: never tiled
        results = stylizer.stylize_many([photo, photo])  # one at a time at a fixed size
        assert all(np.array_equal(result, expected) for result in results)
    with pytest.raises(StylenetError, match=r"takes 45x67 px images only, got 45x40") as error:
        stylizer.stylize(photo[:40])
    assert "\n" not in str(error.value)


def test_plain_model_writes_the_plain_form_of_an_exported_model(model: Path, tmp_path: Path):
    """The runtime's conversion (for bundled styles), in a process without torch."""
    script = (
        "import sys; from stylenet.runtime.plain import plain_model; "
        f"print(plain_model({str(model)!r}, {str(tmp_path / 'fixed.onnx')!r}, size=(48, 64))); "
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1e-5  # the largest difference from the model
    assert plain_model(model, tmp_path / "any.onnx") < 1e-5
    image = np.random.default_rng(2).random((1, 3, 48, 64), dtype=np.float32)
    for path in (tmp_path / "fixed.onnx", tmp_path / "any.onnx"):
        assert bool_or_optional(onnx.load(path)) == []
        assert np.abs(run(path, image) - run(model, image)).max() < 1e-5


def test_refusals_are_one_line_and_write_nothing(model: Path, exported: dict, tmp_path: Path):
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    cases = [
        (lambda: plain_model(model, taken), "exists"),
        (lambda: plain_model(exported["any"], tmp_path / "x.onnx"), "statistics interface"),
        (lambda: plain_model(model, tmp_path / "x.onnx", size=(0, 5)), "size must be"),
        (lambda: plain_graph(onnx.load(model), [64]), "size must be"),
        (lambda: run_export(f"ckpt={taken}", f"output={taken}", "size=[64,64]"), "plain=true"),
    ]
    for call, message in cases:
        with pytest.raises(StylenetError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    assert taken.read_bytes() == b"keep me" and sorted(tmp_path.iterdir()) == [taken]
