"""The torch-free runtime: Stylizer API, model checks, and turning messy files into pixels."""

import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from helpers import (
    AMBER,
    PHOTOS,
    gray16_ramp,
    linear_rgb_icc,
    make_checkpoint,
    messy_inputs,
    run_export,
)
from stylenet.errors import StylenetError
from stylenet.runtime import plain, tiling
from stylenet.runtime import stylizer as runtime
from stylenet.runtime.images import Pixels, load_image, save_image, to_pixels
from stylenet.runtime.stylizer import Stylizer


@pytest.fixture(scope="module")
def stylizer(model: Path) -> Stylizer:
    return Stylizer(model, threads=1)


def test_pil_in_pil_out_numpy_in_numpy_out(stylizer: Stylizer):
    photo = Image.open(PHOTOS[0])
    out = stylizer.stylize(photo)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == photo.size
    array = np.asarray(photo.convert("RGB"))
    out_array = stylizer.stylize(array)
    assert out_array.dtype == np.uint8 and out_array.shape == array.shape
    assert np.array_equal(out_array, np.asarray(out))
    assert np.abs(out_array.astype(int) - array).mean() > 5  # it did something


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (33, 65)])
def test_any_size_comes_back_at_its_size(stylizer: Stylizer, size: tuple[int, int]):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert stylizer.stylize(image).shape == (*size, 3)


def test_batches_group_same_sizes_and_keep_order(stylizer: Stylizer, monkeypatch):
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, shape, dtype=np.uint8)
        for shape in [(20, 30, 3), (16, 16, 3), (20, 30, 3), (20, 30, 3)]
    ]
    single = [stylizer.stylize(image) for image in images]
    batches = []
    run = stylizer.run
    monkeypatch.setattr(stylizer, "run", lambda batch: batches.append(batch.shape) or run(batch))
    many = stylizer.stylize_many(images, batch_size=2)
    assert sorted(batches) == [(1, 16, 16, 3), (1, 20, 30, 3), (2, 20, 30, 3)]
    for one, batched in zip(single, many, strict=True):
        assert np.abs(one.astype(int) - batched).max() <= 1


def test_session_created_once(model: Path, monkeypatch):
    created = []
    session_class = ort.InferenceSession
    monkeypatch.setattr(
        runtime.ort, "InferenceSession", lambda *a, **k: created.append(1) or session_class(*a, **k)
    )
    stylizer = Stylizer(model)
    for _ in range(3):
        stylizer.stylize(np.zeros((8, 8, 3), np.uint8))
    assert len(created) == 1


def test_strength_blends_with_the_original(stylizer: Stylizer):
    photo = np.asarray(Image.open(PHOTOS[0]).convert("RGB"))
    full = stylizer.stylize(photo).astype(float)
    assert np.array_equal(stylizer.stylize(photo, strength=0.0), photo)
    half = stylizer.stylize(photo, strength=0.5).astype(float)
    assert np.abs(half - (photo + full) / 2).max() <= 1
    with pytest.raises(ValueError, match="strength"):
        stylizer.stylize(photo, strength=1.5)


def test_preserve_color_keeps_chroma_takes_luminance(stylizer: Stylizer):
    photo = Image.open(PHOTOS[0]).convert("RGB")
    stylized = stylizer.stylize(photo)
    kept = stylizer.stylize(photo, preserve_color=True)
    ycc = [np.asarray(image.convert("YCbCr"), dtype=float) for image in (photo, stylized, kept)]
    unclipped = (np.asarray(kept) > 2).all(-1) & (np.asarray(kept) < 253).all(-1)
    assert unclipped.mean() > 0.5
    assert np.abs(ycc[2][..., 1:] - ycc[0][..., 1:])[unclipped].mean() < 1.5  # chroma: the photo
    assert np.abs(ycc[2][..., 0] - ycc[1][..., 0])[unclipped].mean() < 1.5  # luma: stylized
    assert np.abs(ycc[1][..., 1:] - ycc[0][..., 1:]).mean() > 3  # plain stylizing does change it


def test_alpha_is_kept(stylizer: Stylizer):
    rgba = Image.open(PHOTOS[0]).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    out = stylizer.stylize(rgba)
    assert out.mode == "RGBA" and out.size == rgba.size
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(rgba.getchannel("A")))


def test_providers(model: Path, monkeypatch):
    assert Stylizer(model, providers=["CPUExecutionProvider"]).session.get_providers() == [
        "CPUExecutionProvider"
    ]
    with pytest.raises(StylenetError, match="Bogus not in this onnxruntime build"):
        Stylizer(model, providers=["Bogus", "CPUExecutionProvider"])
    stylizer = Stylizer(model, threads=2)
    assert stylizer.session.get_session_options().intra_op_num_threads == 2
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: available)
    assert runtime.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: available[2:])
    assert runtime.default_providers() == ["CPUExecutionProvider"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def test_tiles_join_without_seams_on_a_real_photo(model: Path, monkeypatch):
    """amber.jpg (1080 x 1080) in tiles of 256: the whole image's result, within 35 dB PSNR.

    It is just over `STATS_PIXELS`, so the tiles share statistics pooled from crops; given the
    exact statistics instead, the tiles' kept centres are the whole image's pixels.
    """
    photo = np.asarray(Image.open(AMBER).convert("RGB"))
    assert photo.shape[0] * photo.shape[1] > tiling.STATS_PIXELS
    whole = Stylizer(model, threads=1, tile=0).stylize(photo)
    tiled = Stylizer(model, threads=1, tile=256)
    assert tiled.tile_for(*photo.shape[:2]) == 256
    assert psnr(tiled.stylize(photo), whole) >= 35
    monkeypatch.setattr(tiling, "STATS_PIXELS", photo.shape[0] * photo.shape[1])
    assert np.abs(tiled.stylize(photo).astype(int) - whole).max() <= 1  # no seam at all


def test_three_stage_models_tile_on_their_own_grid(tmp_path: Path, monkeypatch):
    """Tiles of a network that halves three times must start at multiples of 8, not 4."""
    ckpt = make_checkpoint(tmp_path / "deep.ckpt", stages=3)
    run_export(f"ckpt={ckpt}", f"output={tmp_path / 'deep.onnx'}")
    photo = np.asarray(Image.open(AMBER).convert("RGB"))[:300, :420]
    monkeypatch.setattr(tiling, "STATS_PIXELS", photo.shape[0] * photo.shape[1])  # exact stats
    whole = Stylizer(tmp_path / "deep.onnx", threads=1, tile=0).stylize(photo)
    tiled = Stylizer(tmp_path / "deep.onnx", threads=1, tile=256)
    assert tiled.align == 8 and tiled.tile_for(*photo.shape[:2]) == 256
    assert np.abs(tiled.stylize(photo).astype(int) - whole).max() <= 1


def test_spans_cover_the_image_once_with_aligned_overlapping_windows():
    cases = [(1080, 256, 28, 4), (1000, 1024, 60, 4), (9, 120, 28, 4), (4001, 300, 60, 4)]
    for length, tile, overlap, align in [*cases, (1080, 352, 88, 8), (1001, 400, 96, 8)]:
        spans = tiling.spans(length, tile, overlap, align)
        kept = [(w.start + k.start, w.start + k.stop) for w, k, _ in spans]
        assert [(p.start, p.stop) for _, _, p in spans] == kept
        starts, stops = zip(*kept, strict=True)
        assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == length
        for window, keep, _ in spans:
            assert window.start % align == 0 and window.stop - window.start <= tile
            assert keep.start >= min(overlap, window.start)  # context before the kept part
            assert window.stop - window.start - keep.stop >= min(overlap, length - window.stop)


def test_when_images_are_tiled(model: Path, tmp_path: Path):
    auto = Stylizer(model)
    assert auto.overlap == 28  # receptive radius 25, rounded up to a multiple of 4
    big = tiling.AUTO_TILE_PIXELS // 1000 + 1
    assert auto.tile_for(1000, big) == tiling.TILE and auto.tile_for(1000, big - 1) is None
    assert Stylizer(model, tile=0).tile_for(1000, big) is None
    assert Stylizer(model, tile=200).tile_for(200, 201) == 200
    assert Stylizer(model, tile=200).tile_for(200, 200) is None
    with pytest.raises(StylenetError, match="at least 112 pixels for this model, got 100"):
        Stylizer(model, tile=100)
    plain = plain_graph(model, tmp_path / "plain.onnx")
    assert Stylizer(plain).tile_for(1000, big) is None  # runs whole
    with pytest.raises(StylenetError, match="cannot be tiled") as error:
        Stylizer(plain, tile=512)
    assert "\n" not in str(error.value)
    odd = onnx.load(model)  # a model whose tiling grid is unreadable runs whole, no traceback
    onnx.helper.set_model_props(odd, {"receptive_radius": "25", "downsample": "eight"})
    onnx.save(odd, tmp_path / "odd.onnx")
    assert Stylizer(tmp_path / "odd.onnx").tile_for(1000, big) is None
    with pytest.raises(StylenetError, match="cannot be tiled"):
        Stylizer(tmp_path / "odd.onnx", tile=512)


def plain_graph(model: Path, path: Path) -> Path:
    """`model`'s plain form (`stylenet.runtime.plain`): one input, one output."""
    onnx.save(plain.plain_graph(onnx.load(model)), path)
    return path


def test_plain_graphs_stylize_whole(model: Path, tmp_path: Path):
    whole = Stylizer(plain_graph(model, tmp_path / "plain.onnx"))
    photo = np.asarray(Image.open(PHOTOS[0]).convert("RGB"))
    assert [arg.name for arg in whole.session.get_inputs()] == ["image"]
    assert np.array_equal(whole.stylize(photo), Stylizer(model).stylize(photo))


def test_optional_inputs_are_fed_only_when_tiling(model: Path, monkeypatch):
    """Whole images feed only `image`; tiles feed the statistics (`run`), measured pooled over
    crops (`norm_stats`), as onnxruntime's optional inputs."""
    stylizer = Stylizer(model, threads=1, tile=128)
    fed = []
    run = stylizer.session.run
    monkeypatch.setattr(
        stylizer.session, "run", lambda out, feeds: fed.append(sorted(feeds)) or run(out, feeds)
    )
    photo = np.asarray(Image.open(PHOTOS[0]).convert("RGB"))
    stylizer.stylize(photo[:100, :120])
    assert fed == [["image"]]
    fed.clear()
    stylizer.stylize(photo[:200, :150])  # in tiles
    assert fed[0] == ["image", "pool_norm_stats"] and len(fed) > 2
    assert all(feeds == ["given_norm_stats", "image", "use_given_norm_stats"] for feeds in fed[1:])


def not_a_stylenet_model(path: Path) -> Path:
    """A valid ONNX model with the wrong interface: a 1-D float vector in and out."""
    vector = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n"])
    output = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n"])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "relu", [vector], [output]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    onnx.save(model, path)
    return path


def with_required_input(model: Path, path: Path) -> Path:
    """`model` with one more input that a caller must feed: not the stylenet convention."""
    proto = onnx.load(model)
    proto.graph.input.append(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1]))
    onnx.save(proto, path)
    return path


def test_unusable_models_are_one_line_errors(model: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("an ONNX model, honest\n")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    ckpt = tmp_path / "last.ckpt"
    with zipfile.ZipFile(ckpt, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    cases = {
        tmp_path / "missing.onnx": "not found",
        empty: "empty",
        text: "not a usable ONNX model",
        truncated: "not a usable ONNX model",
        ckpt: "PyTorch checkpoint, not an ONNX model",
        not_a_stylenet_model(tmp_path / "relu.onnx"): "not a stylenet model",
        with_required_input(model, tmp_path / "required.onnx"): "not a stylenet model",
    }
    for path, message in cases.items():
        with pytest.raises(StylenetError, match=message) as error:
            Stylizer(path)
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_messy_files_become_clean_pixels_or_one_line_errors(tmp_path: Path):
    files = messy_inputs(tmp_path)
    refused = {
        "empty": "empty file",
        "truncated": "truncated or corrupt",
        "text": "not an image",
        "bomb": "decompression bomb",
    }
    for name, message in refused.items():
        with pytest.raises(StylenetError, match=message):
            load_image(files[name])

    def load(name: str) -> Pixels:
        pixels = load_image(files[name])
        assert pixels.rgb.dtype == np.uint8 and pixels.rgb.shape[2] == 3
        return pixels

    assert np.array_equal(load("cmyk").rgb[0, 0], [255, 0, 0])
    expected = (gray16_ramp().astype(float) / 257).round()
    assert np.abs(load("gray16").rgb[..., 0] - expected).max() <= 1  # not clipped to white
    assert load("rotated").rgb.shape == (60, 40, 3)  # stored 60x40, EXIF says rotate 90 degrees
    animated = load("animated")
    assert np.array_equal(animated.rgb[0, 0], [0, 0, 255]) and "3 frames" in animated.notes[0]
    rgba = load("rgba")
    assert np.array_equal(rgba.alpha, np.asarray(Image.open(files["rgba"]).getchannel("A")))
    palette = load("palette")
    assert palette.alpha[0, 0] == 0 and palette.alpha[10, 10] == 255
    assert np.array_equal(palette.rgb[10, 10], [200, 30, 30])
    assert load("tiny").rgb.shape == (2, 3, 3)


def test_icc_tagged_images_come_out_in_srgb(tmp_path: Path):
    path = tmp_path / "linear.png"
    Image.new("RGB", (4, 4), (128, 128, 128)).save(path, icc_profile=linear_rgb_icc())
    pixels = load_image(path)
    assert np.abs(pixels.rgb.astype(int) - 188).max() <= 2 and not pixels.notes
    image = Image.new("RGB", (4, 4), (128, 128, 128))
    image.info["icc_profile"] = b"garbage"
    broken = to_pixels(image)
    assert np.array_equal(broken.rgb, np.asarray(image)) and "ICC" in broken.notes[0]


def test_max_size_bounds_the_longer_side():
    pixels = load_image(AMBER, max_size=300)  # 1080 x 1080 JPEG, decoded in draft mode
    assert pixels.rgb.shape == (300, 300, 3)
    assert load_image(PHOTOS[0], max_size=2000).rgb.shape[:2] in ((321, 481), (481, 321))


def test_save_is_atomic_and_never_clobbers(tmp_path: Path):
    target = tmp_path / "out" / "photo_mosaic.jpg"
    save_image(Image.new("RGBA", (8, 8), "red"), target)  # JPEG: alpha dropped, not an error
    assert Image.open(target).mode == "RGB"
    before = target.read_bytes()
    with pytest.raises(StylenetError, match="exists"):
        save_image(Image.new("RGB", (8, 8), "blue"), target)
    assert target.read_bytes() == before
    save_image(Image.new("RGB", (8, 8), "blue"), target, overwrite=True)
    assert target.read_bytes() != before
    assert [p.name for p in target.parent.iterdir()] == ["photo_mosaic.jpg"]
