"""Several styles in one network (conditional instance norm): training, export, blends."""

import json
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from test_serve import jpeg
from test_video import stylenet

from benchmarks.video import pan, write_clip
from helpers import PHOTOS, compose_train, make_checkpoint, run_export
from stylenet.errors import StylenetError
from stylenet.runtime.images import load_image
from stylenet.runtime.quantize import quantize_model
from stylenet.runtime.serve.server import in_background
from stylenet.runtime.serve.service import Service
from stylenet.runtime.stylizer import Stylizer
from stylenet.training.export import Checkpoint, load_checkpoint
from stylenet.training.train import initial_network, train


def test_two_styles_train_in_one_network(tmp_path, photo_folder):
    run = tmp_path / "run"
    train(compose_train(run, f"data.root={photo_folder}", "styles=[starry_night,wave]"))
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    network = checkpoint.network
    assert network.styles == 2 and checkpoint.steps == 4
    assert [s["name"] for s in checkpoint.config["styles"]] == ["starry_night", "wave"]
    assert all(len(s["sha256"]) == 64 for s in checkpoint.config["styles"])
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "val/starry_night/style" in metrics and "val/wave/style" in metrics
    # Each style trained its own scales and shifts, from the same start.
    first_norm = network.norms()[0]
    assert not torch.equal(first_norm.weight[0], first_norm.weight[1])
    photos = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outputs = []
        for weights in ([[1.0, 0.0]], [[0.0, 1.0]]):
            with network.styled(torch.tensor(weights)):
                outputs.append(network(photos))
    assert (outputs[0] - outputs[1]).abs().mean() > 1e-3


def test_styles_must_exist_and_differ(tmp_path, photo_folder):
    for styles, message in [
        ("[starry_night,no_such_style]", "'no_such_style' is neither a style"),
        ("[wave,wave]", "each style once"),
    ]:
        with pytest.raises(StylenetError, match=message):
            train(compose_train(tmp_path / styles, f"data.root={photo_folder}", f"styles={styles}"))
    two = [f"data.root={photo_folder}", "styles=[starry_night,wave]"]
    with pytest.raises(StylenetError, match=r"one weight, or one per style \(2\), not 3"):
        train(compose_train(tmp_path / "weights", *two, "loss.style_weight=[1,2,3]"))


def test_a_new_style_starts_from_a_network_of_several(tmp_path):
    """init_from a 2-style network, one style trained: the shared convolutions as they are, each
    norm's scale and shift the average of the two styles' (their even blend)."""
    ckpt = make_checkpoint(tmp_path / "two.ckpt", styles=2)
    parent = load_checkpoint(ckpt)
    cfg = compose_train(tmp_path / "run", "network.num_res_blocks=1", f"init_from={ckpt}")
    network = initial_network(cfg, parent).eval()
    assert network.styles == 1
    photos = torch.rand(1, 3, 32, 32)
    with torch.no_grad(), parent.network.styled(torch.tensor([[0.5, 0.5]])):
        blend = parent.network(photos)
    with torch.no_grad():
        torch.testing.assert_close(network(photos), blend)
    # And back: a network of two styles from that one starts both from its scales and shifts.
    again = compose_train(tmp_path / "again", "network.num_res_blocks=1", "styles=[wave,udnie]")
    pair = initial_network(again, Checkpoint(network, {}, 0, {}))
    for weights in ([[1.0, 0.0]], [[0.0, 1.0]]):
        with torch.no_grad(), pair.styled(torch.tensor(weights)):
            torch.testing.assert_close(pair(photos), blend)


def test_export_takes_style_weights(tmp_path):
    ckpt = make_checkpoint(tmp_path / "two.ckpt", styles=2)
    run_export(f"ckpt={ckpt}", f"output={tmp_path / 'two.onnx'}")
    session = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    names = [arg.name for arg in session.get_inputs()]
    assert names[0] == "image" and names[-1] == "style_weights"
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["style_names"]) == ["starry_night", "wave"]
    cards = json.loads(meta["style_cards"])
    assert [c["painting"] for c in cards] == ["The Starry Night", "The Great Wave off Kanagawa"]
    assert meta["style_name"] == "starry_night+wave"
    image = np.random.default_rng(0).random((1, 3, 24, 32), dtype=np.float32)

    def run(weights: list[float]) -> np.ndarray:
        feeds = {"image": image, "style_weights": np.array([weights], np.float32)}
        return session.run(["stylized"], feeds)[0]

    first, second, half = run([1, 0]), run([0, 1]), run([0.5, 0.5])
    assert np.abs(first - second).mean() > 1e-3
    # A blend is neither style: its norms scale and shift halfway.
    assert np.abs(half - first).mean() > 1e-4 and np.abs(half - second).mean() > 1e-4
    with pytest.raises(StylenetError, match="export-plain MODEL --style NAME"):
        run_export(f"ckpt={ckpt}", f"output={tmp_path / 'plain.onnx'}", "plain=true")


@pytest.fixture(scope="module")
def two_styles(tmp_path_factory) -> Path:
    """A random-weight model of The Starry Night and The Great Wave, exported by export.py."""
    folder = tmp_path_factory.mktemp("two")
    run_export(
        f"ckpt={make_checkpoint(folder / 'two.ckpt', styles=2)}", f"output={folder / 'two.onnx'}"
    )
    return folder / "two.onnx"


def test_blends_in_the_runtime(two_styles):
    stylizer = Stylizer(two_styles)
    assert stylizer.style_names == ["starry_night", "wave"]
    photo = load_image(PHOTOS[0]).rgb[:120, :160]
    with pytest.raises(StylenetError, match=r"holds 2 styles \(starry_night, wave\): choose one"):
        stylizer.stylize(photo)
    first = stylizer.stylize(photo, style="starry_night")
    # A blend of 1.0 and 0.0 is that style alone, exactly; weights are normalised.
    assert np.array_equal(first, stylizer.stylize(photo, style={"starry_night": 1, "wave": 0}))
    blend = stylizer.stylize(photo, style={"starry_night": 0.7, "wave": 0.3})
    assert np.array_equal(blend, stylizer.stylize(photo, style="starry_night:7,wave:3"))
    second = stylizer.stylize(photo, style="wave")
    assert np.abs(first.astype(int) - second).mean() > 1
    assert 0 < np.abs(blend.astype(int) - first).mean() < np.abs(second.astype(int) - first).mean()
    for bad, message in [
        ("mosaic", "has no style 'mosaic'; its styles: starry_night, wave"),
        ("wave:-1,starry_night:2", "must be >= 0"),
        ({"wave": 0.0}, "not all 0"),
        ("wave:lots", "expected NAME or NAME:WEIGHT"),
    ]:
        with pytest.raises(StylenetError, match=message):
            stylizer.using(bad)
    # Tiles share the whole image's statistics in the chosen blend.
    tiled = Stylizer(two_styles, tile=112).stylize(photo, style="starry_night:0.7,wave:0.3")
    assert np.abs(tiled.astype(int) - blend).max() <= 1


def test_blends_from_the_command_line(two_styles, tmp_path):
    code, _, stderr = stylenet("stylize", PHOTOS[0], "--model", two_styles, "-o", tmp_path)
    assert code == 1 and "choose one or a blend with --style" in stderr
    blend = "starry_night:0.7,wave:0.3"
    code, _, stderr = stylenet("stylize", PHOTOS[0], "-m", two_styles, "-s", blend, "-o", tmp_path)
    assert code == 0, stderr
    assert [p.name for p in tmp_path.iterdir()] == [f"{PHOTOS[0].stem}_starry_night70-wave30.jpg"]
    code, _, stderr = stylenet("stylize", PHOTOS[0], "--style", blend, "-o", tmp_path)
    assert code == 1 and "a blend needs one model of several styles" in stderr
    code, stdout, _ = stylenet("info", two_styles)
    assert "wave: The Great Wave off Kanagawa, Katsushika Hokusai (c. 1831)" in stdout


def test_plain_form_of_one_blend(two_styles, tmp_path):
    """export-plain --style: the style weights become a constant; the plain file paints what the
    model paints in that blend, and names it."""
    out = tmp_path / "plain.onnx"
    code, _, stderr = stylenet("export-plain", two_styles, "-o", out)
    assert code == 1 and "choose one or a blend with --style" in stderr and not out.exists()
    blend = "starry_night:0.7,wave:0.3"
    code, stdout, stderr = stylenet("export-plain", two_styles, "-o", out, "--style", blend)
    assert code == 0, stderr
    assert f"the plain form of {two_styles} in {blend}" in stdout
    plain = Stylizer(out)
    assert [i.name for i in plain.session.get_inputs()] == ["image"]
    assert plain.style_names == ["starry_night70+wave30"]
    photo = load_image(PHOTOS[1]).rgb[:80, :96]
    wanted = Stylizer(two_styles).stylize(photo, style=blend).astype(int)
    assert np.abs(plain.stylize(photo).astype(int) - wanted).max() <= 1
    assert (
        np.abs(
            plain.stylize(photo).astype(int)
            - Stylizer(two_styles).stylize(photo, style="wave").astype(int)
        ).mean()
        > 1
    )


def test_int8_copy_keeps_both_styles(two_styles, tmp_path):
    """Calibration takes the styles in turn: each stays close to its float32 self."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in PHOTOS[:4]:
        (photos / path.name).write_bytes(path.read_bytes())
    quantize_model(two_styles, photos, tmp_path / "int8.onnx", count=4)
    exact, int8 = Stylizer(two_styles), Stylizer(tmp_path / "int8.onnx")
    assert int8.style_names == exact.style_names
    photo = load_image(PHOTOS[5]).rgb[:96, :128]
    for style in exact.style_names:
        wanted = exact.stylize(photo, style=style).astype(int)
        assert np.abs(int8.stylize(photo, style=style) - wanted).mean() < 8, style


def test_a_clip_in_a_blend(two_styles, tmp_path):
    source = tmp_path / "clip.mp4"
    write_clip(source, pan(load_image(PHOTOS[0]).rgb, (64, 80), 4).frames, 12)
    report = Stylizer(two_styles).stylize_video(
        source, tmp_path / "out.mp4", style="starry_night:0.5,wave:0.5", progress=False
    )
    assert (report.frames, report.width, report.height) == (4, 80, 64)


def test_the_server_offers_each_style_of_a_model(two_styles, tmp_path):

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "two.onnx").write_bytes(two_styles.read_bytes())
    service = Service.load(models=folder, threads=1)
    try:
        with in_background(service) as url, httpx.Client(base_url=url, timeout=60) as client:
            styles = {s["name"]: s for s in client.get("/api/styles").json()["styles"]}
            assert styles["two:wave"]["painting"] == "The Great Wave off Kanagawa"
            assert styles["two:starry_night"]["artist"] == "Vincent van Gogh"
            assert client.get("/api/styles/two%3Awave/thumbnail").status_code == 200
            results = []
            for style in ("two:starry_night", "two:wave"):
                files = {"image": ("photo.jpg", jpeg(), "image/jpeg")}
                answer = client.post("/api/stylize", files=files, data={"style": style})
                assert answer.status_code == 200, answer.text
                results.append(np.asarray(Image.open(BytesIO(answer.content))).astype(int))
            assert np.abs(results[0] - results[1]).mean() > 1
    finally:
        service.close()
