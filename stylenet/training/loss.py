"""Perceptual losses from a frozen ImageNet VGG16 (Johnson et al. 2016; Gatys et al. 2016).

Both losses are *relative* errors, so that they do not depend on the scale of the VGG activations
(which differs by orders of magnitude between VGG16 weight files) nor on the layer:
- style: for each style layer, ||G(output) - G(style)||^2 / ||G(style)||^2, with G the Gram matrix;
  their weighted mean over the layers. 1.0 means "as far from the style as a blank image".
- content: ||phi(output) - phi(photo)||^2 / ||phi(photo)||^2 at the content layers, averaged.
So a style weight of 10 with a content weight of 1 means "a drop of 0.01 in style error is worth a
rise of 0.1 in content error", whichever weights file is used.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from stylenet.errors import StylenetError, check_number

VGG_WEIGHTS_ENV = "STYLENET_VGG_WEIGHTS"
# What the style term matches per layer (PerceptualLoss.statistics): the Gram matrix (Gatys et al.);
# the channel means and the centred Gram matrix apart, each half the layer's term; or the whole
# distribution of the activations, by the sliced Wasserstein distance (Heitz et al. 2021).
STYLE_STATISTICS = ("gram", "mean_covariance", "sliced_wasserstein")
# The sliced Wasserstein term compares this many random positions of each image (and of the
# painting) per layer and step: sorting is its cost, ~10x that of the whole VGG pass for all 65536
# relu1_2 positions of a 256-px crop, and a random subset's quantiles estimate the whole's.
SLICED_SAMPLES = 4096

# torchvision's vgg16().features: 13 convolutions, each followed by a ReLU, in five blocks that end
# with a max-pool. Name every ReLU the way the literature does (relu3_3 is the 3rd ReLU of block 3).
_BLOCK_SIZES = (2, 2, 3, 3, 3)


def _relu_indices() -> dict[str, int]:
    indices, i = {}, 0
    for block, n in enumerate(_BLOCK_SIZES, start=1):
        for conv in range(1, n + 1):
            indices[f"relu{block}_{conv}"] = i + 1  # conv at i, its ReLU at i + 1
            i += 2
        i += 1  # the max-pool
    return indices


VGG16_LAYERS = _relu_indices()

# ImageNet statistics that both torchvision's and the shared VGG16 weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg16_features(weights: str | None = None) -> nn.Sequential:
    """VGG16 `features` with ImageNet weights: a local state-dict file if given, else torchvision's.

    `weights` falls back to the STYLENET_VGG_WEIGHTS environment variable; with neither, torchvision
    downloads (and caches) its IMAGENET1K_V1 weights.
    """
    import torchvision

    path = weights or os.environ.get(VGG_WEIGHTS_ENV)
    if not path:
        try:
            return torchvision.models.vgg16(weights="IMAGENET1K_V1").features
        except Exception as e:  # no network, a broken cache, ...
            raise StylenetError(
                f"could not get torchvision's VGG16 weights ({e}); point loss.vgg_weights or "
                f"{VGG_WEIGHTS_ENV} at a local vgg16().features state-dict file"
            ) from e
    source = f"{path} (from loss.vgg_weights or {VGG_WEIGHTS_ENV})"
    if not Path(path).is_file():
        raise StylenetError(f"VGG16 weights file not found: {source}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise StylenetError(
            f"cannot read VGG16 weights {source}: not a PyTorch weights file ({type(e).__name__})"
        ) from e
    # Built on the meta device and filled by the file: no random init of 138M parameters first.
    with torch.device("meta"):
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    try:
        # assign=True keeps the file's tensors: make them fp32 whatever the file stores.
        features.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    except Exception as e:
        first_line = str(e).strip().splitlines()[-1].strip()
        raise StylenetError(
            f"not a torchvision vgg16().features state dict: {source}: {first_line}"
        ) from e
    return features


def _freeze(module: nn.Module) -> None:
    """Turn every parameter into a non-persistent buffer.

    The VGG is a fixed function, not part of the model: as buffers its weights follow `.to(device)`
    but never reach the optimizer, DDP's gradient sync or the checkpoints (58 MB each otherwise).
    """
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, param.detach(), persistent=False)


class VGGFeatures(nn.Module):
    """Frozen VGG16 that returns named ReLU activations and runs only as deep as asked.

    It runs channels_last (NHWC) by default: oneDNN's CPU convolutions take NHWC as it is and
    run 25-40% faster on it than on NCHW, which they reorder for every call (cuDNN prefers NHWC
    too). Its activations come out channels_last; `gram_matrix` and the losses take either.
    """

    def __init__(
        self, layers: Sequence[str], weights: str | None = None, channels_last: bool = True
    ):
        super().__init__()
        unknown = sorted(set(layers) - VGG16_LAYERS.keys())
        if unknown:
            raise StylenetError(
                f"unknown VGG16 layer(s) {unknown}; choose from {list(VGG16_LAYERS)}"
            )
        depth = max(VGG16_LAYERS[name] for name in layers) + 1
        # Only convolutions, ReLUs and max-pools: train and eval mode compute the same thing.
        self.features = load_vgg16_features(weights)[:depth]
        _freeze(self.features)
        for m in self.features.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False  # an activation we return must not be overwritten later
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.features.to(memory_format=self.memory_format)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations at `layers` for RGB images in [0, 1]; stops after the deepest one."""
        wanted = {VGG16_LAYERS[name]: name for name in layers}
        last = max(wanted)
        x = ((image - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out


def positions(features: torch.Tensor) -> torch.Tensor:
    """The (B, C, H, W) activations as (B, H*W, C) samples, one C-vector per position: a view of
    channels_last activations, no copy."""
    b, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b, h * w, c)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) normalised by C*H*W, computed in fp32 even under autocast.

    The normalisation makes it independent of image size; fp32 because bf16's 8-bit mantissa loses
    the small differences between Grams that the style loss is made of.
    """
    b, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        if features.is_contiguous(memory_format=torch.channels_last):
            f = positions(features.float())
            gram = torch.bmm(f.transpose(1, 2), f)
        else:
            f = features.float().reshape(b, c, h * w)
            gram = torch.bmm(f, f.transpose(1, 2))
        return gram / (c * h * w)


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel means (B, C) and the Gram matrix of the centred features (B, C, C), normalised
    as `gram_matrix`'s; both in fp32. The Gram matrix is their sum (mean outer product weighted by
    H*W/(C*H*W)): apart, each can be weighted as much as the other."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        features = features.float()
        mean = features.mean((2, 3), keepdim=True)
        return mean.flatten(1), gram_matrix(features - mean)


def sliced_wasserstein_error(
    found: torch.Tensor, target: torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """Per-sample relative sliced Wasserstein distance between two sets of activations.

    `found` (B, N, C) and `target` (1, M, C) are projected on each column of `directions` (C, P);
    along each, the sorted projections of `found` are compared with the target's quantiles at the
    same ranks (M may differ from N): sum of squared differences / the target quantiles' sum of
    squares. Sorting matches whole distributions, not only their first two moments as a Gram
    matrix does: a painting's few distinct colours rather than their mean tint (Heitz et al. 2021).
    """
    with torch.autocast(device_type=found.device.type, enabled=False):
        mine = torch.sort(found.float() @ directions, dim=1).values
        theirs = torch.sort(target.float() @ directions, dim=1).values
        n, m = mine.shape[1], theirs.shape[1]
        ranks = ((torch.arange(n, device=found.device) + 0.5) * (m / n)).long()
        quantiles = theirs[:, ranks]
        return ((mine - quantiles) ** 2).sum((1, 2)) / (quantiles**2).sum().clamp_min(1e-12)


def random_positions(samples: torch.Tensor, limit: int) -> torch.Tensor:
    """At most `limit` of the (B, N, C) `samples`' positions, at random (the same ones for each
    image)."""
    n = samples.shape[1]
    if n <= limit:
        return samples
    return samples[:, torch.randperm(n, device=samples.device)[:limit]]


def random_directions(channels: int, device: torch.device) -> torch.Tensor:
    """`channels` random unit vectors in R^channels, as the columns of a (C, C) matrix."""
    directions = torch.randn(channels, channels, device=device)
    return directions / directions.norm(dim=0, keepdim=True)


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||x - target||^2 / ||target||^2 over all but the batch dimension."""
    dims = tuple(range(1, x.dim()))
    x, target = x.float(), target.expand_as(x).float()
    return ((x - target) ** 2).sum(dims) / (target**2).sum(dims).clamp_min(1e-12)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels, in [0, 1] pixel units."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


class PerceptualLoss(nn.Module):
    """Weighted sum of content, style and total-variation losses for one style image, or one of
    several (a network of several styles: `style` in `forward`).

    Call `set_style` once per style image: its Gram matrices are computed then and kept.
    """

    def __init__(
        self,
        style_layers: Mapping[str, float] | Sequence[str] = (
            "relu1_2",
            "relu2_2",
            "relu3_3",
            "relu4_3",
        ),
        content_layers: Sequence[str] = ("relu3_3",),
        style_weight: float | Sequence[float] = 10.0,
        content_weight: float = 1.0,
        tv_weight: float = 0.0,
        vgg_weights: str | None = None,
        style_statistics: str = "gram",
    ):
        super().__init__()
        if not style_layers or not content_layers:
            raise StylenetError("loss.style_layers and loss.content_layers must not be empty")
        # One style weight, or one per style of a network of several (`styles`, in their order):
        # paintings differ in how much style a network takes before it loses the photo.
        if isinstance(style_weight, Sequence):
            style_weights = list(style_weight)
            names = [f"style_weight[{i}]" for i in range(len(style_weights))]
        else:
            style_weights, names = [style_weight], ["style_weight"]
        if not style_weights:
            raise StylenetError("loss.style_weight: a number, or one per style")
        for key, value in [
            *zip(names, style_weights, strict=True),
            ("content_weight", content_weight),
            ("tv_weight", tv_weight),
        ]:
            check_number(f"loss.{key}", value, 0)
        # A list weighs its layers equally; a mapping gives each layer its weight. The style term
        # is the weighted mean, so style_weight keeps its meaning whatever the weights.
        if not isinstance(style_layers, Mapping):
            style_layers = dict.fromkeys(style_layers, 1.0)
        for name, weight in style_layers.items():
            check_number(f"loss.style_layers.{name}", weight, 0)
        if not sum(style_layers.values()) > 0:
            raise StylenetError("loss.style_layers: at least one weight must be positive")
        if style_statistics not in STYLE_STATISTICS:
            raise StylenetError(
                f"loss.style_statistics: one of {', '.join(STYLE_STATISTICS)}, "
                f"not {style_statistics!r}"
            )
        self.style_statistics = style_statistics
        self.style_layers = list(style_layers)
        self.style_layer_weights = dict(style_layers)
        self.content_layers = list(content_layers)
        self.style_weights = style_weights
        self.content_weight = content_weight
        self.tv_weight = tv_weight
        self.vgg = VGGFeatures(self.style_layers + self.content_layers, vgg_weights)
        self.style_grams: list[dict[str, torch.Tensor]] = []  # per style

    @torch.no_grad()
    def set_style(self, style: torch.Tensor, index: int = 0) -> None:
        """Compute the target Gram matrices once from a (1, 3, H, W) style image in [0, 1], as
        style number `index` (0, 1, ... in turn for several)."""
        if not 0 <= index <= len(self.style_grams):
            raise ValueError(f"set style {len(self.style_grams)} before style {index}")
        self.style_grams[index : index + 1] = [self.statistics(self.vgg(style, self.style_layers))]

    def statistics(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the style term compares at each style layer: its Gram matrix; with
        style_statistics=mean_covariance the centred one, and the channel means ("<layer>/mean");
        with sliced_wasserstein the activations themselves (`positions`)."""
        found = {}
        for name in self.style_layers:
            if self.style_statistics == "gram":
                found[name] = gram_matrix(features[name])
            elif self.style_statistics == "mean_covariance":
                found[f"{name}/mean"], found[name] = mean_and_covariance(features[name])
            else:
                found[name] = positions(features[name])
        return found

    def layer_style_error(
        self, found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], name: str
    ) -> torch.Tensor:
        """The style error at layer `name` (batch mean): relative Gram distance; the mean of the
        relative covariance and mean distances; or the relative sliced Wasserstein distance along
        as many random directions as the layer has channels, new ones at every call (torch's
        random generator: a resumed run draws the same ones)."""
        if self.style_statistics == "sliced_wasserstein":
            mine, theirs = (
                random_positions(x, SLICED_SAMPLES) for x in (found[name], target[name])
            )
            directions = random_directions(mine.shape[-1], mine.device)
            return sliced_wasserstein_error(mine, theirs, directions).mean()
        error = relative_error(found[name], target[name])
        if self.style_statistics == "mean_covariance":
            error = (error + relative_error(found[f"{name}/mean"], target[f"{name}/mean"])) / 2
        return error.mean()

    def _apply(self, fn, *args, **kwargs):  # keep the Grams on the module's device and dtype
        self.style_grams = [{k: fn(v) for k, v in grams.items()} for grams in self.style_grams]
        return super()._apply(fn, *args, **kwargs)

    def forward(
        self, output: torch.Tensor, content: torch.Tensor, style: int = 0
    ) -> dict[str, torch.Tensor]:
        """Loss terms (batch means) for `output`, the stylized `content`, against style number
        `style`; `total` is weighted."""
        if style >= len(self.style_grams):
            raise RuntimeError(
                f"PerceptualLoss.set_style(image, {style}) must be called before computing the loss"
            )
        style_grams = self.style_grams[style]
        style_weight = self.style_weights[style if len(self.style_weights) > 1 else 0]
        out_features = self.vgg(output, self.style_layers + self.content_layers)
        # The photo's features are a target: no gradient, and only the content layers.
        with torch.no_grad():
            content_features = self.vgg(content, self.content_layers)
        weights = self.style_layer_weights
        found = self.statistics(out_features)
        style = sum(
            weights[name] * self.layer_style_error(found, style_grams, name)
            for name in self.style_layers
        ) / sum(weights.values())
        content_loss = torch.stack(
            [
                relative_error(out_features[name], content_features[name]).mean()
                for name in self.content_layers
            ]
        ).mean()
        tv = total_variation(output.float())
        total = self.content_weight * content_loss + style_weight * style + self.tv_weight * tv
        return {"content": content_loss, "style": style, "tv": tv, "total": total}
