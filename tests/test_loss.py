"""The perceptual loss against an independent computation with the genuine VGG16 weights."""

import numpy as np
import pytest
import torch
import torchvision

from helpers import PHOTO_DIR, STYLES, VGG_WEIGHTS
from stylenet.errors import StylenetError
from stylenet.training.data import load_scaled, load_style_image, to_tensor
from stylenet.training.loss import (
    SLICED_SAMPLES,
    VGG16_LAYERS,
    PerceptualLoss,
    gram_matrix,
    random_directions,
    random_positions,
    relative_error,
    sliced_wasserstein_error,
)

STYLE_LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def _photo(i: int, size: int = 64) -> torch.Tensor:
    path = sorted((PHOTO_DIR / "val").glob("*.jpg"))[i]
    image = load_scaled(path, size).crop((0, 0, size, size))
    return to_tensor(image)[None]


@pytest.fixture(scope="module")
def reference_vgg():
    """torchvision's own VGG16, loaded the documented way, activations taken by index."""
    vgg = torchvision.models.vgg16(weights=None).features
    vgg.load_state_dict(torch.load(VGG_WEIGHTS, weights_only=True))
    return vgg.eval()


def _reference_features(vgg, image: torch.Tensor) -> dict[str, np.ndarray]:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x, out = (image - mean) / std, {}
    # Conventional VGG16 indices of relu1_2, relu2_2, relu2_2, relu3_3, relu4_3 in torchvision.
    index = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"}
    with torch.no_grad():
        for i, layer in enumerate(vgg):
            x = layer(x)
            if i in index:
                out[index[i]] = x.clone().double().numpy()
    return out


def _np_gram(f: np.ndarray) -> np.ndarray:
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return np.einsum("bik,bjk->bij", f, f) / (c * h * w)


def test_layer_names_match_the_conventional_indices():
    assert [VGG16_LAYERS[n] for n in STYLE_LAYERS] == [3, 8, 15, 22]
    assert VGG16_LAYERS["relu5_3"] == 29


def test_gram_matrix_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    # rows (1, 2) and (3, 4): G = [[1+4, 3+8], [3+8, 9+16]] / (2*1*2)
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4
    assert torch.allclose(gram_matrix(f)[0], expected)


def test_gram_matrix_is_the_same_for_channels_last_features():
    f = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(0))
    nhwc = f.contiguous(memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert torch.allclose(gram_matrix(nhwc), gram_matrix(f), atol=1e-6)


def test_relative_error_by_hand():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    # sample 0: ||x - 0||^2 / ||0||^2 is guarded; sample 1: (0 + 1) / 1 = 1
    assert relative_error(x[1:], target[1:]).item() == pytest.approx(1.0)
    assert relative_error(x, torch.tensor([[3.0, 0.0]])).tolist() == pytest.approx([16 / 9, 5 / 9])


@pytest.mark.parametrize("layer_weights", [None, [4.0, 2.0, 1.0, 0.5]])
def test_loss_matches_an_independent_computation(reference_vgg, layer_weights):
    style = load_style_image(STYLES / "starry_night.jpg", 96)
    photos = torch.cat([_photo(0), _photo(1)])
    output = torch.rand_like(photos, generator=torch.Generator().manual_seed(0))
    # A list of layers weighs them equally; a mapping gives each its weight.
    layers = STYLE_LAYERS
    if layer_weights is not None:
        layers = dict(zip(STYLE_LAYERS, layer_weights, strict=True))
    loss = PerceptualLoss(layers, ["relu2_2"], style_weight=3.0, content_weight=2.0, tv_weight=0.5)
    loss.set_style(style)
    got = loss(output, photos)

    fs, fo, fc = (_reference_features(reference_vgg, t) for t in (style, output, photos))
    style_errors = []
    for name in STYLE_LAYERS:
        gs, go = _np_gram(fs[name]), _np_gram(fo[name])
        style_errors.append(np.mean(((go - gs) ** 2).sum((1, 2)) / (gs**2).sum()))
    expected_style = np.average(style_errors, weights=layer_weights)
    c_out, c_photo = fo["relu2_2"], fc["relu2_2"]
    expected_content = np.mean(
        ((c_out - c_photo) ** 2).sum((1, 2, 3)) / (c_photo**2).sum((1, 2, 3))
    )
    o = output.double().numpy()
    expected_tv = (np.diff(o, axis=3) ** 2).mean() + (np.diff(o, axis=2) ** 2).mean()

    assert got["style"].item() == pytest.approx(expected_style, rel=1e-4)
    assert got["content"].item() == pytest.approx(expected_content, rel=1e-4)
    assert got["tv"].item() == pytest.approx(expected_tv, rel=1e-4)
    total = 2.0 * expected_content + 3.0 * expected_style + 0.5 * expected_tv
    assert got["total"].item() == pytest.approx(total, rel=1e-4)


def test_identical_images_have_zero_loss():
    style = load_style_image(STYLES / "wave.jpg", 64)
    loss = PerceptualLoss()
    loss.set_style(style)
    got = loss(style, style)
    assert got["style"].item() == pytest.approx(0, abs=1e-6)
    assert got["content"].item() == pytest.approx(0, abs=1e-6)


def test_loss_does_not_depend_on_the_activation_scale(tmp_path):
    """A weights file whose activations are all 10x larger gives the same losses (scale-free)."""
    state = torch.load(VGG_WEIGHTS, weights_only=True)
    scaled = {}
    for key, value in state.items():
        first = key.startswith("0.")  # conv1_1: scale weight and bias; later convs: bias only
        scaled[key] = value * 10 if (first or key.endswith("bias")) else value
    path = tmp_path / "scaled.pth"
    torch.save(scaled, path)

    style, photo = load_style_image(STYLES / "mosaic.jpg", 64), _photo(2)
    output = photo.flip(-1)
    losses = []
    for weights in (str(VGG_WEIGHTS), str(path)):
        loss = PerceptualLoss(vgg_weights=weights)
        loss.set_style(style)
        losses.append(loss(output, photo))
    assert losses[1]["style"].item() == pytest.approx(losses[0]["style"].item(), rel=1e-4)
    assert losses[1]["content"].item() == pytest.approx(losses[0]["content"].item(), rel=1e-4)
    assert losses[0]["style"].item() > 0.01  # a real difference, not 0 == 0


def test_content_goes_only_as_deep_as_the_content_layer():
    loss = PerceptualLoss(content_layers=["relu2_2"])
    loss.set_style(torch.rand(1, 3, 64, 64))
    calls = {}
    for i in (VGG16_LAYERS["relu2_2"], VGG16_LAYERS["relu4_3"]):
        loss.vgg.features[i].register_forward_hook(
            lambda *_, i=i: calls.update({i: calls.get(i, 0) + 1})
        )
    loss(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert calls == {VGG16_LAYERS["relu2_2"]: 2, VGG16_LAYERS["relu4_3"]: 1}


def test_vgg_is_frozen_and_not_checkpointed():
    loss = PerceptualLoss()
    assert list(loss.parameters()) == []
    assert loss.state_dict() == {}


def test_style_grams_are_computed_once(monkeypatch):
    loss = PerceptualLoss()
    loss.set_style(torch.rand(1, 3, 64, 64))
    grams = dict(loss.style_grams[0])
    loss(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert all(loss.style_grams[0][k] is grams[k] for k in grams)


def test_several_styles_each_with_its_own_grams():
    torch.manual_seed(0)
    loss = PerceptualLoss()
    first, second = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64) ** 3
    with pytest.raises(ValueError, match="before style 1"):
        loss.set_style(second, 1)
    loss.set_style(first)
    loss.set_style(second, 1)
    output, photo = first.expand(2, -1, -1, -1), torch.rand(2, 3, 64, 64)
    against = [loss(output, photo, style)["style"].item() for style in (0, 1)]
    assert against[0] < 1e-6 < against[1]  # the output has the first style's Grams exactly
    with pytest.raises(RuntimeError, match="set_style"):
        loss(output, photo, 2)


@pytest.mark.parametrize("content", [None, b"not a torch file", "wrong-shape"])
def test_bad_weights_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "wrong-shape":
        torch.save({"0.weight": torch.zeros(3, 3, 3, 3)}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(StylenetError) as e:
        PerceptualLoss(vgg_weights=str(path))
    message = str(e.value)
    assert str(path) in message and "STYLENET_VGG_WEIGHTS" in message and "\n" not in message


def test_weights_file_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLENET_VGG_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(StylenetError, match=r"missing\.pth"):
        PerceptualLoss()


def test_negative_weight_is_refused():
    with pytest.raises(StylenetError, match=r"loss\.style_weight"):
        PerceptualLoss(style_weight=-1)
    with pytest.raises(StylenetError, match=r"loss\.style_layers\.relu1_2"):
        PerceptualLoss({"relu1_2": -1.0, "relu2_2": 1.0})
    with pytest.raises(StylenetError, match="at least one weight must be positive"):
        PerceptualLoss({"relu1_2": 0.0})


def test_each_style_of_several_has_its_own_weight():
    """style_weight as a list: style k's total uses weight k; one number serves every style."""
    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    output = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    weighted = PerceptualLoss(style_weight=[1.0, 5.0])
    for index, name in enumerate(("wave", "the_scream")):
        weighted.set_style(load_style_image(STYLES / f"{name}.jpg", 64), index)
    for style, weight in ((0, 1.0), (1, 5.0)):
        terms = weighted(output, photos, style)
        expected = terms["content"] + weight * terms["style"]
        torch.testing.assert_close(terms["total"], expected)
    with pytest.raises(StylenetError, match=r"loss\.style_weight\[1\] must be a number >= 0"):
        PerceptualLoss(style_weight=[1.0, -2.0])


def test_mean_covariance_matches_an_independent_computation(reference_vgg):
    """style_statistics=mean_covariance: per layer, the mean of the relative distances of the
    channel means and of the centred Gram matrices; zero for the style image itself."""
    style = load_style_image(STYLES / "the_scream.jpg", 96)
    output = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss = PerceptualLoss(STYLE_LAYERS, style_statistics="mean_covariance")
    loss.set_style(style)
    fs, fo = (_reference_features(reference_vgg, t) for t in (style, output))
    errors = []
    for name in STYLE_LAYERS:
        ms, mo = fs[name].mean((2, 3)), fo[name].mean((2, 3))
        cs, co = (_np_gram(f - f.mean((2, 3), keepdims=True)) for f in (fs[name], fo[name]))
        mean_error = ((mo - ms) ** 2).sum(1) / (ms**2).sum()
        cov_error = ((co - cs) ** 2).sum((1, 2)) / (cs**2).sum()
        errors.append(np.mean((mean_error + cov_error) / 2))
    assert loss(output, output)["style"].item() == pytest.approx(np.mean(errors), rel=1e-4)
    assert loss(style, style)["style"].item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(
        StylenetError,
        match=r"loss\.style_statistics: one of gram, mean_covariance, sliced_wasserstein",
    ):
        PerceptualLoss(style_statistics="histogram")


def test_sliced_wasserstein_error_by_an_independent_computation():
    """Each direction: the found projections sorted, against the target's at the same quantiles
    (the target has more samples); the sum of squares relative to the target quantiles'."""
    g = torch.Generator().manual_seed(0)
    found, target = torch.randn(2, 5, 3, generator=g), torch.randn(1, 20, 3, generator=g) + 1
    directions = torch.randn(3, 4, generator=g)
    f, t, d = (x.double().numpy() for x in (found, target, directions))
    ranks = ((np.arange(5) + 0.5) * 20 / 5).astype(int)  # 2, 6, 10, 14, 18
    quantiles = np.sort(t[0] @ d, axis=0)[ranks]
    expected = [
        ((np.sort(f[b] @ d, axis=0) - quantiles) ** 2).sum() / (quantiles**2).sum() for b in (0, 1)
    ]
    assert sliced_wasserstein_error(found, target, directions).tolist() == pytest.approx(expected)


def test_sliced_wasserstein_sees_what_the_gram_matrix_does_not():
    """Mirrored activations have the same Gram matrix but another distribution; the order of the
    positions matters to neither."""
    target = torch.rand(1, 50, 4, generator=torch.Generator().manual_seed(0))
    directions = random_directions(4, torch.device("cpu"))
    shuffled = target[:, torch.randperm(50)]
    assert sliced_wasserstein_error(shuffled, target, directions).item() == pytest.approx(0)
    gram = target.transpose(1, 2) @ target
    assert torch.allclose((-target).transpose(1, 2) @ -target, gram)
    assert sliced_wasserstein_error(-target, target, directions).item() > 0.5


def test_sliced_wasserstein_style_term():
    """style_statistics=sliced_wasserstein: zero for the painting itself (no more positions than
    SLICED_SAMPLES, so all compared), positive for a photo; the same value from the same random
    state (an exact resume draws the same directions and positions)."""
    style = load_style_image(STYLES / "the_scream.jpg", 64)
    assert style.shape[-2] * style.shape[-1] <= SLICED_SAMPLES
    loss = PerceptualLoss(STYLE_LAYERS, style_statistics="sliced_wasserstein")
    loss.set_style(style)
    assert loss(style, style)["style"].item() == pytest.approx(0, abs=1e-6)
    photo = _photo(0, 128)  # more relu1_2 positions than SLICED_SAMPLES: a random subset
    torch.manual_seed(1)
    first = loss(photo, photo)["style"].item()
    torch.manual_seed(1)
    assert loss(photo, photo)["style"].item() == first > 0.05
    assert loss(photo, photo)["style"].item() != first  # new directions and positions


def test_random_positions_draws_a_subset():
    samples = torch.arange(2 * 10 * 3).view(2, 10, 3)
    subset = random_positions(samples, 4)
    assert subset.shape == (2, 4, 3)
    rows = {tuple(r) for r in samples[0].tolist()}
    assert {tuple(r) for r in subset[0].tolist()} <= rows and len(
        set(map(tuple, subset[0].tolist()))
    ) == 4
    assert random_positions(samples, 10) is samples
