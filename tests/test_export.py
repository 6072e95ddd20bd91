"""Checkpoint -> ONNX: parity with PyTorch at odd sizes, metadata, refusals, one-line errors."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image

from helpers import (
    DATA,
    MOSAIC,
    NETWORKS,
    PHOTOS,
    ROOT,
    UPSAMPLED_SIZES,
    assert_computes_the_declared_network,
    assert_computes_upsample_conv,
    make_checkpoint,
    run_export,
)
from stylenet.errors import StylenetError
from stylenet.training import export
from stylenet.training.export_graph import (
    ExportForm,
    conv_to_pixel_blocks,
    pixel_shuffle,
    upsample_conv3x3_phases,
    upsample_on_phases,
)
from stylenet.training.network import ConvLayer, TransformerNet


def checkpoint_network(ckpt: Path) -> TransformerNet:
    """The network rebuilt by hand from the checkpoint, independently of export.py."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    network = TransformerNet(width=8, num_res_blocks=1)
    network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()})
    return network.eval()


@pytest.mark.parametrize("shape", [(1, 5, 7), (2, 33, 65), (1, 257, 191), (1, 1, 1), (3, 64, 48)])
def test_exported_model_matches_checkpoint_network(model: Path, shape: tuple[int, int, int]):
    network = checkpoint_network(model.with_name("small.ckpt"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    image = torch.rand(shape[0], 3, *shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = network(image).clamp(0, 1).numpy()
    (actual,) = session.run(["stylized"], {"image": image.numpy()})
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() < 1e-4


def test_real_photo_parity(model: Path):
    network = checkpoint_network(model.with_name("small.ckpt"))
    photo = np.asarray(Image.open(PHOTOS[1]).convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].contiguous()  # 321 x 481: odd
    with torch.no_grad():
        expected = network(image).clamp(0, 1).numpy()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["stylized"], {"image": image.numpy()})
    assert np.abs(actual - expected).max() < 1e-4


def test_statistics_interface(model: Path):
    """Besides image -> stylized: the statistics out, and optional inputs to give or pool them."""
    graph = onnx.load(model).graph
    optional = ["given_norm_stats", "use_given_norm_stats", "pool_norm_stats"]
    assert [v.name for v in graph.input] == ["image", *optional]
    assert [v.name for v in graph.output] == ["stylized", "norm_stats"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    assert types == {
        "image": "tensor(float)",
        "given_norm_stats": "optional(tensor(float))",  # may be left out: defaults in the graph
        "use_given_norm_stats": "optional(tensor(bool))",
        "pool_norm_stats": "optional(tensor(bool))",
    }
    network = checkpoint_network(model.with_name("small.ckpt"))
    sizes = [(1, 33, 65), (3, 40, 24)]
    assert export.max_difference(network, onnx.load(model), sizes) < 1e-4  # all three ways
    meta = {p.key: p.value for p in onnx.load(model).metadata_props}
    assert meta["receptive_radius"] == str(network.receptive_radius()) == "25"
    assert meta["downsample"] == "4" and meta["network_stages"] == "2"


def test_every_runtime_version_loads_it_without_warnings(model: Path, tmp_path: Path, capfd):
    """IR 8, the lowest opset 18 needs (onnxruntime <= 1.17 refuses 10), and no initializer
    listed as a graph input, which onnxruntime warns about in every session.

    The warning check is checked itself: the same model with its defaults as such initializers
    (the earlier form) does warn."""
    proto = onnx.load(model)
    assert proto.ir_version == 8
    assert not {v.name for v in proto.graph.input} & {i.name for i in proto.graph.initializer}
    warned = onnx.load(model)
    warned.graph.input.append(
        onnx.helper.make_tensor_value_info("old", onnx.TensorProto.FLOAT, [1])
    )
    warned.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, np.float32), "old"))
    onnx.save(warned, tmp_path / "warned.onnx")

    def warnings(path: Path) -> list[str]:
        options = ort.SessionOptions()
        options.log_severity_level = 1  # info and up
        capfd.readouterr()
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [line for line in capfd.readouterr().err.splitlines() if "[W:onnxruntime" in line]

    assert any("appears in graph inputs" in line for line in warnings(tmp_path / "warned.onnx"))
    assert warnings(model) == []


@pytest.mark.parametrize("size", UPSAMPLED_SIZES)
def test_phase_upsampling_computes_the_layers_it_declares(size):
    """Export's phase convolutions equal upsample, reflection pad and 3x3 conv."""
    assert_computes_upsample_conv(upsample_conv3x3_phases, upsample_on_phases, size)


def test_pixel_shuffle_moves_the_same_numbers():
    """The transposed-convolution pixel shuffle is torch's, bit for bit (one product by 1 each)."""
    x = torch.randn(2, 3 * 4, 5, 7, dtype=torch.float64)
    assert torch.equal(pixel_shuffle(x), F.pixel_shuffle(x, 2))


@pytest.mark.parametrize("kernel", [9, 3])
def test_conv_to_pixel_blocks_is_the_convolution_in_blocks(kernel: int):
    torch.manual_seed(0)
    layer = ConvLayer(5, 3, kernel).double()
    x = torch.rand(2, 5, 12, 10, dtype=torch.float64)
    blocks = conv_to_pixel_blocks(x, layer)
    assert blocks.shape == (2, 3 * 4, 6, 5)
    torch.testing.assert_close(blocks, F.pixel_unshuffle(layer(x), 2))


@pytest.mark.parametrize(("width", "stages", "size"), NETWORKS)
def test_export_form_computes_the_declared_network(width: int, stages: int, size: tuple):
    """Width 4 computes its first layer on pixel blocks, width 16 as it trains."""
    assert_computes_the_declared_network(ExportForm, width, stages, size)


def test_export_form(model: Path):
    """The graph computes at lower resolutions where it can (`export_graph.ExportForm`):
    - each upsampling as a convolution at the lower resolution to 4x the channels, then a
      pixel shuffle: no upsampled image (Resize);
    - the output conv on 2x2 pixel blocks, stride 2 to 4 x 3 channels, then a pixel shuffle;
    - each pixel shuffle a grouped ConvTranspose with one-hot 2x2 kernels, not a DepthToSpace;
    - for this slim network (width 8) the first layer too: stride 2 to 4 x 8 channels, and the
      stride-2 conv after it reads the blocks with a 2x2 kernel.
    Every kernel is an initializer (folded at export). The caller's network is left as it was.
    test_exported_model_matches_checkpoint_network checks that the function is the same."""
    graph = onnx.load(model).graph
    ops = [node.op_type for node in graph.node]
    assert "Resize" not in ops and "DepthToSpace" not in ops
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    shuffles = [node for node in graph.node if node.op_type == "ConvTranspose"]
    one_hot = np.eye(4, dtype=np.float32).reshape(4, 1, 2, 2)
    for shuffle, channels in zip(shuffles, [16, 8, 3], strict=True):
        kernel = next(init for init in graph.initializer if init.name == shuffle.input[1])
        expected = np.tile(one_hot, (channels, 1, 1, 1))
        assert np.array_equal(numpy_helper.to_array(kernel), expected)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in shuffle.attribute}
        assert attributes["group"] == channels and attributes["strides"] == [2, 2]
    convs = [node for node in graph.node if node.op_type == "Conv"]
    kernels = [shapes[conv.input[1]] for conv in convs]
    strides = [next(a.ints for a in conv.attribute if a.name == "strides") for conv in convs]
    assert kernels[:2] == [[4 * 8, 3, 10, 10], [16, 4 * 8, 2, 2]]
    assert strides[:2] == [[2, 2], [1, 1]]
    assert kernels[-1] == [4 * 3, 8, 10, 10] and strides[-1] == [2, 2]
    assert next(n for n in graph.node if convs[-1].output[0] in n.input) is shuffles[-1]
    network = TransformerNet(width=4, num_res_blocks=0)
    weights = {key: value.clone() for key, value in network.state_dict().items()}
    export.to_onnx(network, opset=18)
    assert network.training and all(norm.shared is None for norm in network.norms())
    assert all(torch.equal(value, weights[key]) for key, value in network.state_dict().items())


def test_full_width_first_layer_is_exported_as_declared():
    """At full width the first layer's 32 channels fill onnxruntime's blocks: exported as is."""
    graph = export.to_onnx(TransformerNet(width=32, num_res_blocks=0), opset=18).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert [shapes[conv.input[1]] for conv in convs[:2]] == [[32, 3, 9, 9], [64, 32, 3, 3]]


def test_graph_is_dynamic_and_named(model: Path):
    graph = onnx.load(model).graph
    for value, name in ((graph.input[0], "image"), (graph.output[0], "stylized")):
        dims = value.type.tensor_type.shape.dim
        assert value.name == name
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_metadata_is_a_model_card_without_the_training_machines_paths(model: Path):
    meta = {p.key: p.value for p in onnx.load(model).metadata_props}
    assert meta["style_name"] == "mosaic" and meta["style_painting"] == "Mosaic"
    assert meta["style_artist"] == meta["style_year"] == meta["style_licence"] == "unknown"
    assert meta["style_image"] == "mosaic.jpg"
    assert meta["style_image_sha256"] == hashlib.sha256(MOSAIC.read_bytes()).hexdigest()
    assert meta["training_steps"] == "1234" and meta["training_image_size"] == "256"
    assert meta["training_command"] == "python train.py style=mosaic"
    assert meta["training_time"] == "90 min on Test CPU (2 threads)"
    config = json.loads(meta["training_config"])
    assert config["network"] == {
        "_target_": "stylenet.training.network.TransformerNet",
        "width": 8,
        "num_res_blocks": 1,
        "stages": 2,
    }
    assert (config["style"]["image"], config["data"]["root"]) == ("mosaic.jpg", "train")
    assert not any(str(DATA) in value for value in meta.values())
    assert (meta["network_width"], meta["network_num_res_blocks"]) == ("8", "1")
    assert "float32 NCHW RGB in [0, 1]" in meta["convention"]
    assert meta["stylenet_version"][0].isdigit()


def test_refuses_to_write_when_onnxruntime_differs(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "to_onnx", lambda network, opset: onnx.load(model))
    monkeypatch.setattr(export, "max_difference", lambda *args: 0.02)
    ckpt = make_checkpoint(tmp_path / "c.ckpt")
    with pytest.raises(StylenetError, match=r"differs from PyTorch by 2\.00e-02"):
        export.export_checkpoint(ckpt, tmp_path / "out.onnx", tolerance=1e-3)
    assert list(tmp_path.iterdir()) == [tmp_path / "c.ckpt"]


def test_never_overwrites_without_overwrite(tmp_path):
    existing = tmp_path / "mosaic.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(StylenetError, match="exists"):
        export.export_checkpoint(tmp_path / "missing.ckpt", existing)
    assert existing.read_bytes() == b"keep me"


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(1)}, plain)
    no_config = tmp_path / "no_config.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, no_config)
    wrong = make_checkpoint(tmp_path / "wrong.ckpt")
    state = torch.load(wrong, weights_only=False)
    state["hyper_parameters"]["config"]["network"]["width"] = 16
    torch.save(state, wrong)
    cases = {
        tmp_path / "missing.ckpt": "checkpoint not found",
        text: "not a PyTorch checkpoint",
        plain: "not a Lightning checkpoint",
        no_config: "no training config",
        wrong: "cannot rebuild the network",
    }
    for path, message in cases.items():
        with pytest.raises(StylenetError, match=message) as error:
            export.load_checkpoint(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_entry_point_errors_are_one_line(tmp_path):
    """export.py as users run it: a bad checkpoint or an existing output is one line, exit 1."""
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"keep me")
    for args in (
        [f"ckpt={tmp_path / 'missing.ckpt'}", f"output={tmp_path / 'x.onnx'}"],
        [f"ckpt={tmp_path / 'missing.ckpt'}", f"output={existing}"],
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / "export.py"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "x.onnx").exists()


def test_overwrite_true_replaces(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "to_onnx", lambda network, opset: onnx.load(model))
    output = tmp_path / "mosaic.onnx"
    output.write_bytes(b"old")
    run_export(f"ckpt={model.with_name('small.ckpt')}", f"output={output}", "overwrite=true")
    assert onnx.load(output).graph.input[0].name == "image"
    assert [p.name for p in tmp_path.iterdir()] == ["mosaic.onnx"]  # no temporary file left
