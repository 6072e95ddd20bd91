"""Scale-free quality figures for a stylized image: how close to the style, how close to the photo.

Unlike the training loss (squared, at the recipe's layers), these are plain relative distances on a
fixed ruler, so that any two models, recipes or optimisers can be compared:
- style error: mean over relu1_2, relu2_2, relu3_3, relu4_3 of ||G(out) - G(style)|| / ||G(style)||,
  with the style image at a fixed scale. 0 is a perfect match of the painting's texture statistics.
- content error: ||phi(out) - phi(photo)|| / ||phi(photo)|| at relu3_3. 0 is the photo itself.
Both are ratios of norms, so they mean the same thing whichever VGG16 weights file is used.
- edge correlation: how well the output keeps the photo's edges, the correlation of the two
  images' luminance gradient magnitudes after a Gaussian of `EDGE_SIGMA` px; 1 is the photo's
  edges exactly. The content error does not see blur: a network that smeared the photo into soft
  bands of the painting's colours had a lower one than a peer that kept every edge (0.99 against
  1.02), and an edge correlation of 0.63 against 0.81.
- contrast: the norm of the output's relu1_2 covariance (its centred Gram matrix) over the
  painting's: how much of the painting's colour and fine-stroke variation there is, 1 as much.
  The Gram matrix is mostly the channel means (docs/design.md, "The loss"), so the style error
  misses much of a wash of the painting's mean colour: an orange-tinted Scream with a lower
  style error than a peer's bold one (0.488 against 0.585) had a contrast of 0.58 against 0.67.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from stylenet.errors import StylenetError
from stylenet.training.loss import (
    VGG16_LAYERS,
    VGGFeatures,
    gram_matrix,
    mean_and_covariance,
    relative_error,
)

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu3_3"
CONTRAST_LAYER = "relu1_2"  # colours and the finest strokes
# Edges at the scale of a photo's shapes, not of the strokes painted over them (512 px photos):
# at 1 px the painting's own fine texture counts as lost edges, at 4 px blur barely shows.
EDGE_SIGMA = 2.0
_LUMA = (0.299, 0.587, 0.114)


def relative_distance(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||x - target|| / ||target||: the square root of the loss's relative error."""
    return relative_error(x, target).sqrt()


def layer_style_errors(
    features: Mapping[str, torch.Tensor], style_grams: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per layer of `style_grams`, the per-sample relative Gram distance: which scale of the
    painting's texture is missing (relu1_2: palette and finest strokes; relu4_3: large shapes)."""
    return {
        name: relative_distance(gram_matrix(features[name]), gram)
        for name, gram in style_grams.items()
    }


def content_error(features: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
    """Per-sample relative feature distance between an output and its photo at one layer."""
    return relative_distance(features, photo_features)


def edge_magnitude(image: torch.Tensor, sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W): the Sobel gradient magnitude of the luminance after
    a Gaussian blur of `sigma` px (edges reflected)."""
    luma = (image * image.new_tensor(_LUMA)[:, None, None]).sum(1, keepdim=True)
    radius = max(1, round(3 * sigma))
    taps = torch.exp(-((torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2) / 2)
    taps = (taps / taps.sum()).to(image.device)
    luma = F.pad(luma, (radius,) * 4, mode="reflect")
    luma = F.conv2d(F.conv2d(luma, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    sobel = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None]
    gradients = F.conv2d(F.pad(luma, (1,) * 4, mode="reflect"), kernels)
    return gradients.pow(2).sum(1).sqrt()


def edge_correlation(output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of `output`'s and `photo`'s edge magnitudes (module
    docstring): 1 keeps the photo's edges, 0 has nothing to do with them."""
    a, b = (edge_magnitude(x.float()).flatten(1) for x in (output, photo))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def covariance_norm(features: torch.Tensor) -> torch.Tensor:
    """Per-sample norm of the centred Gram matrix (B,)."""
    return mean_and_covariance(features)[1].flatten(1).norm(dim=1)


class Scorer:
    """Style and content errors against one style image, whose Grams are computed once.

    `vgg` may be a loss's VGGFeatures (no second copy of the weights) if it reaches relu4_3.
    """

    def __init__(
        self, style: torch.Tensor, vgg: VGGFeatures | None = None, weights: str | None = None
    ):
        self.vgg = vgg if vgg is not None else VGGFeatures(STYLE_LAYERS, weights)
        deepest = max(VGG16_LAYERS[name] for name in STYLE_LAYERS)
        if len(self.vgg.features) <= deepest:
            raise StylenetError(f"the quality metrics need a VGG16 that reaches {STYLE_LAYERS[-1]}")
        with torch.no_grad():
            features = self.vgg(style.to(self.device), STYLE_LAYERS)
        self.style_grams = {name: gram_matrix(f) for name, f in features.items()}
        self.style_covariance_norm = covariance_norm(features[CONTRAST_LAYER])

    @property
    def device(self) -> torch.device:
        return self.vgg.mean.device

    @torch.no_grad()
    def __call__(self, output: torch.Tensor, photo: torch.Tensor) -> dict[str, torch.Tensor]:
        """Figures per sample of `output`, the stylized `photo` (B, 3, H, W): "style", "content",
        "edges" (the edge correlation), "contrast" and the style error of each layer under its
        name ("relu1_2", ...)."""
        features = self.vgg(output.to(self.device), STYLE_LAYERS)
        photo_features = self.vgg(photo.to(self.device), (CONTENT_LAYER,))
        layers = layer_style_errors(features, self.style_grams)
        return {
            "style": torch.stack(list(layers.values())).mean(0),  # the mean over the layers
            "content": content_error(features[CONTENT_LAYER], photo_features[CONTENT_LAYER]),
            "edges": edge_correlation(output, photo),
            "contrast": covariance_norm(features[CONTRAST_LAYER]) / self.style_covariance_norm,
            **layers,
        }
