"""The image transformation network of Johnson et al. 2016, as the field uses it today.

"Perceptual Losses for Real-Time Style Transfer and Super-Resolution" (Johnson, Alahi, Fei-Fei,
ECCV 2016), with the two changes everyone adopted since:
- instance normalisation instead of batch normalisation (Ulyanov et al. 2016, "Instance
  Normalization: The Missing Ingredient for Fast Stylization"), and
- nearest-neighbour upsampling followed by a convolution instead of transposed convolutions, which
  leave checkerboard artefacts (Odena et al. 2016, https://distill.pub/2016/deconv-checkerboard/).

Images are float RGB in [0, 1], NCHW. The output is not clamped: the loss sees the raw values and
whoever turns the output into pixels clamps it.
"""

import torch
import torch.nn.functional as F
from torch import nn

# Two stride-2 convolutions: height and width must be multiples of this inside the network.
DOWNSAMPLE = 4
# Smallest side the network runs on: after two halvings the 3x3 reflection padding of the residual
# blocks needs at least 2 pixels.
MIN_SIDE = 2 * DOWNSAMPLE


class ConvLayer(nn.Sequential):
    """Reflection padding + convolution: zero padding darkens the borders of stylized images."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.ReflectionPad2d(kernel_size // 2),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride),
        )


class ConvNormReLU(nn.Sequential):
    """Convolution, instance norm, ReLU: the building block of the encoder and the decoder."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            ConvLayer(in_channels, out_channels, kernel_size, stride),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (He et al. 2016), no ReLU after the sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormReLU(channels, channels, 3),
            ConvLayer(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Sequential):
    """Nearest-neighbour x2 upsampling then a convolution: no checkerboard, unlike ConvTranspose."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvNormReLU(in_channels, out_channels, kernel_size),
        )


class TransformerNet(nn.Module):
    """Encoder (9x9 conv, two stride-2 convs), residual blocks, decoder (two x2 upsamples, 9x9).

    `width` is the channel count of the first layer (32 in the paper); the encoder doubles it twice.
    Any input size works: the input is padded to a multiple of 4 (and at least `MIN_SIDE`) by edge
    replication and the output is cropped back, so the output always has the input's height and
    width.
    """

    def __init__(self, width: int = 32, num_res_blocks: int = 5):
        super().__init__()
        if width < 1 or num_res_blocks < 0:
            raise ValueError(
                f"width must be >= 1 and num_res_blocks >= 0, got {width}, {num_res_blocks}"
            )
        self.width = width
        self.num_res_blocks = num_res_blocks
        w1, w2, w3 = width, 2 * width, 4 * width
        self.layers = nn.Sequential(
            ConvNormReLU(3, w1, 9),
            ConvNormReLU(w1, w2, 3, stride=2),
            ConvNormReLU(w2, w3, 3, stride=2),
            *(ResidualBlock(w3) for _ in range(num_res_blocks)),
            UpsampleConv(w3, w2, 3),
            UpsampleConv(w2, w1, 3),
            ConvLayer(w1, 3, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = max(MIN_SIDE - height, (-height) % DOWNSAMPLE)
        pad_w = max(MIN_SIDE - width, (-width) % DOWNSAMPLE)
        # pad_h/pad_w from max() keep the multiple-of-4 property: MIN_SIDE is a multiple of 4.
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.layers(x)[..., :height, :width]
