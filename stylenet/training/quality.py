"""Scale-free quality figures for a stylized image: how close to the style, how close to the photo.

Unlike the training loss (squared, at the recipe's layers), these are plain relative distances on a
fixed ruler, so that any two models, recipes or optimisers can be compared:
- style error: mean over relu1_2, relu2_2, relu3_3, relu4_3 of ||G(out) - G(style)|| / ||G(style)||,
  with the style image at a fixed scale. 0 is a perfect match of the painting's texture statistics.
- content error: ||phi(out) - phi(photo)|| / ||phi(photo)|| at relu3_3. 0 is the photo itself.
Both are ratios of norms, so they mean the same thing whichever VGG16 weights file is used.
"""

from collections.abc import Mapping

import torch

from stylenet.errors import StylenetError
from stylenet.training.loss import VGG16_LAYERS, VGGFeatures, gram_matrix, relative_error

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu3_3"


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

    @property
    def device(self) -> torch.device:
        return self.vgg.mean.device

    @torch.no_grad()
    def __call__(self, output: torch.Tensor, photo: torch.Tensor) -> dict[str, torch.Tensor]:
        """Errors per sample of `output`, the stylized `photo` (B, 3, H, W): "style", "content",
        and the style error of each layer under its name ("relu1_2", ...)."""
        features = self.vgg(output.to(self.device), STYLE_LAYERS)
        photo_features = self.vgg(photo.to(self.device), (CONTENT_LAYER,))
        layers = layer_style_errors(features, self.style_grams)
        return {
            "style": torch.stack(list(layers.values())).mean(0),  # the mean over the layers
            "content": content_error(features[CONTENT_LAYER], photo_features[CONTENT_LAYER]),
            **layers,
        }
