"""The benchmark's scale-free errors on hand-made tensors, and the benchmark end to end."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks import quality as benchmark
from helpers import PHOTOS, exported_model, make_checkpoint
from stylenet.errors import StylenetError
from stylenet.training.data import load_style_image
from stylenet.training.loss import VGGFeatures, gram_matrix
from stylenet.training.quality import Scorer, content_error, edge_correlation, layer_style_errors


def features(*channels: list[float]) -> torch.Tensor:
    """(1, C, 1, W) features with the given channel rows."""
    return torch.tensor([channels], dtype=torch.float32)[:, :, None, :]


def test_identical_images_have_zero_errors():
    f = torch.rand(2, 4, 5, 6)
    assert torch.equal(layer_style_errors({"a": f}, {"a": gram_matrix(f)})["a"], torch.zeros(2))
    assert torch.equal(content_error(f, f), torch.zeros(2))


def test_known_gram_difference_gives_the_hand_computed_error():
    # Target features [[2, 0], [0, 2]]: Gram (normalised by C*H*W = 4) is the 2x2 identity.
    target = gram_matrix(features([2, 0], [0, 2]))
    assert torch.equal(target[0], torch.eye(2))
    # [[2, 0], [0, 0]] has Gram diag(1, 0): ||G - I|| / ||I|| = 1 / sqrt(2).
    # Zero features have a zero Gram: ||0 - I|| / ||I|| = 1.
    out = {"a": features([2, 0], [0, 0]), "b": features([0, 0], [0, 0])}
    errors = layer_style_errors(out, {"a": target, "b": target})
    assert errors["a"].item() == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert errors["b"].item() == 1


def test_content_error_is_a_distance_per_sample():
    photo = features([3, 0], [0, 4]).repeat(2, 1, 1, 1)  # norm 5
    out = photo.clone()
    out[1, 1, 0, 1] += 3  # sample 1 is 3 away
    assert content_error(out, photo).tolist() == pytest.approx([0.0, 0.6])


def test_edge_correlation_sees_blur_that_the_content_error_does_not():
    photo = load_style_image(PHOTOS[2], 256)
    assert edge_correlation(photo, photo).item() == pytest.approx(1.0, abs=1e-5)
    # Brighter and more contrasty keeps every edge; blurred loses the fine ones; another photo
    # has unrelated edges.
    assert edge_correlation((photo * 1.5).clamp(0, 1), photo).item() > 0.95
    blurred = F.avg_pool2d(photo, 9, stride=1, padding=4, count_include_pad=False)
    other = load_style_image(PHOTOS[3], 256)[..., : photo.shape[2], : photo.shape[3]]
    photo, other = photo[..., : other.shape[2], : other.shape[3]], other
    blurred = blurred[..., : other.shape[2], : other.shape[3]]
    assert 0.3 < edge_correlation(blurred, photo).item() < 0.9
    assert abs(edge_correlation(other, photo).item()) < 0.3
    assert edge_correlation(torch.cat([photo, other]), photo.expand(2, -1, -1, -1)).shape == (2,)


def test_scorer_with_the_real_vgg():
    style = load_style_image(PHOTOS[0], 64)
    scorer = Scorer(style)
    same = scorer(style, style)
    assert same["style"].item() == pytest.approx(0, abs=1e-6)
    assert same["content"].item() == 0
    assert same["contrast"].item() == pytest.approx(1, abs=1e-6)
    # A wash of the painting's mean colour with a third of its contrast keeps less than half its
    # relu1_2 variation, less than the style error says it lost.
    mean = style.mean((2, 3), keepdim=True)
    wash = scorer(mean + (style - mean) / 3, style)
    assert 0.1 < wash["contrast"].item() < 0.4
    assert wash["relu1_2"].item() < 1 - wash["contrast"].item()
    other = scorer(load_style_image(PHOTOS[1], 64)[..., :40, :40], style[..., :40, :40])
    assert other["style"].item() > 0.1 and other["content"].item() > 0.1
    layers = [other[name] for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")]
    assert other["style"].item() == pytest.approx(torch.stack(layers).mean().item())  # mean of 4
    with pytest.raises(StylenetError, match="reaches relu4_3"):
        Scorer(style, vgg=VGGFeatures(["relu2_2"]))


def test_benchmark_end_to_end(tmp_path, monkeypatch, capsys):
    onnx = exported_model(tmp_path)
    ckpt = make_checkpoint(tmp_path / "same_weights.ckpt")
    grid = tmp_path / "grid.png"
    args = [onnx, ckpt, "--photos", PHOTOS[0].parent, "--count", "2", "--size", "64"]
    args += ["--gatys-count", "1", "--gatys-size", "48", "--steps", "3,0,1", "--grid", grid]
    monkeypatch.setattr(sys, "argv", ["quality.py", *map(str, args)])
    benchmark.main()
    out = capsys.readouterr().out
    assert f"photos: 2 of {PHOTOS[0].parent}, longer side at most 64 px: " in out
    assert out.count(": gram, style_weight 10.0, content_weight 1.0 (relu3_3)") == 2
    assert "Gatys (L-BFGS) on 1 of them, longer side at most 48 px" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if " px | " in line]
    assert [row[1].strip() for row in rows] == 2 * [
        "model, 1 forward pass",
        "model, 1 forward pass",
        "the photo as it is (0 steps)",
        "Gatys L-BFGS, 1 steps",
        "Gatys L-BFGS, 3 steps",
    ]
    figures = [[float(x) for x in row[2:6]] for row in rows]  # style, content, edges, total
    assert figures[:5] == figures[5:]  # the checkpoint and its ONNX export measure the same
    model, photo, gatys_1, gatys_3 = figures[1:5]
    assert photo[1] == 0 and photo[2] == 1  # the photo's content error and edge correlation
    assert gatys_3[3] < gatys_1[3] < photo[3] < model[3]  # a random network is worse than a photo
    assert out.count("Gatys steps to reach the model's total loss: ") == 2
    with Image.open(grid) as sheet:  # header + 2 photos; photo + 2 x (model at 2 sizes, 2 Gatys)
        assert sheet.height == 20 + 2 * benchmark.CELL
        assert sheet.width > 9 * benchmark.CELL


def test_models_of_the_same_file_name_get_their_own_columns():
    paths = [Path("/runs/a/checkpoints/last.ckpt"), Path("/runs/b/checkpoints/last.ckpt")]
    assert benchmark.unique_labels([*paths, Path("/outputs/peer")]) == [
        "a/checkpoints/last.ckpt",
        "b/checkpoints/last.ckpt",
        "peer",
    ]


def test_a_missing_vgg_file_is_one_line(tmp_path, monkeypatch):
    """Hydra builds the loss and wraps its error: still one line, no traceback."""
    onnx = exported_model(tmp_path)
    args = [onnx, "--photos", PHOTOS[0].parent, "--count", "1", "--gatys-count", "0"]
    args += ["--vgg-weights", tmp_path / "absent.pth"]
    monkeypatch.setattr(sys, "argv", ["quality.py", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main()
    message = exit_info.value.code  # printed on stderr, and the exit status 1
    assert message.startswith("error: VGG16 weights file not found:") and "\n" not in message
