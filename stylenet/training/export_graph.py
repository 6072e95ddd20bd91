"""The network as its ONNX graph computes it: the trained function, rewritten for onnxruntime.

onnxruntime's CPU convolutions use a blocked layout that pads the output channels to 16 on
AVX-512 (8 on AVX2), so a slim network's convolutions to 3 channels (the output) or 8 (a width-8
first layer) at full resolution mostly compute padding. `ExportForm` computes those on 2x2 pixel
blocks instead, 4x the channels at a quarter of the pixels, and each upsampling as phase
convolutions. It derives its kernels from the trained network's weights inside the computation;
export folds them into initializers.
"""

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.training.network import (
    ConvLayer,
    ConvNormReLU,
    OutputConv,
    TransformerNet,
    UpsampleConv,
)

# Nearest x2 upsampling, reflection padding by 1 and a 3x3 convolution with kernel rows k0, k1, k2
# (network.TAPS), per output row parity: even rows see input rows i-1, i, i+1 through kernel rows
# (k0, k1 + k2, none), odd rows through (none, k0 + k1, k2): PHASES[parity] @ rows; the same holds
# for columns. As for TAPS, the input is edge-replicated by one pixel first.
PHASES = torch.tensor(
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
     [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]
)  # fmt: skip
# Export computes the first layer on pixel blocks below this width, where its channels do not fill
# onnxruntime's 16-wide AVX-512 channel blocks, so blocking fills them (8 x 5 at 1080x1080: ~10%
# less time); at full width the blocks' extra (zero) taps cost more than they save (5-10% slower).
# On AVX2 (8-wide blocks) width 8 fills the blocks already.
BLOCKED_INPUT_BELOW_WIDTH = 16


def upsample_conv3x3_phases(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """conv3x3(reflection_pad(upsample_nearest_x2(x), 1)) as a 3x3 convolution at the input's
    resolution to 4x the channels, one per output pixel's (row, column) parity, then a pixel
    shuffle (`pixel_shuffle`).

    The declared layers' multiply-adds, but no upsampled image nor its padded copy, and 4x the
    output channels, which fill onnxruntime's 16-channel (AVX-512) blocks where 8 did not. The
    network's own transposed convolution (`network.upsample_conv3x3`) kept a ~145 MB column
    buffer at 1080x1080 in onnxruntime.
    """
    phases = PHASES.to(weight)
    kernel = torch.einsum("ayk,bxl,oikl->oabiyx", phases, phases, weight)
    kernel = kernel.reshape(4 * weight.shape[0], weight.shape[1], 3, 3)
    # F.pad, not upsample_conv3x3's concatenated slices: those made torch.export's shape
    # reasoning take minutes (149 instead of 8 s for width 4, no residual blocks). This form
    # never trains, so never meets the compiled backward's problem with F.pad.
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias.repeat_interleave(4))
    return pixel_shuffle(out)  # channel 4 * o + 2 * row parity + column parity


def pixel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """F.pixel_shuffle(x, 2) as a grouped stride-2 transposed convolution whose 2x2 kernels are
    one-hot: each output pixel is one input value times 1, the same numbers. onnxruntime's
    DepthToSpace moved a 1280x720 image of 8 channels at ~1 GB/s (23 ms); this took a fifth of
    that, and its column buffer is one group's 4 x input pixels."""
    channels = x.shape[1] // 4
    one_hot = torch.eye(4, dtype=x.dtype, device=x.device).reshape(4, 1, 2, 2)
    return F.conv_transpose2d(x, one_hot.repeat(channels, 1, 1, 1), stride=2, groups=channels)


def upsample_on_phases(layer: UpsampleConv, x: torch.Tensor) -> torch.Tensor:
    """`layer` with its upsampling and convolution computed by `upsample_conv3x3_phases`."""
    _, ((_, conv), norm, relu) = layer
    return relu(norm(upsample_conv3x3_phases(x, conv.weight, conv.bias)))


def phase_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A stride-1 k x k kernel as a stride-2 (k+1) x (k+1) one with 4x the outputs: output
    channel 4 * o + 2 * row parity + column parity is the kernel shifted by that parity.

    conv2d(x, phase_kernel(w), stride=2) is conv2d(x, w) on 2x2 pixel blocks, in pixel_unshuffle's
    channel order, for inputs of even size after padding: the same multiply-adds (plus the zero
    row and column), with 4x the output channels at a quarter of the pixels.
    """
    shifted = [F.pad(weight, (dx, 1 - dx, dy, 1 - dy)) for dy in (0, 1) for dx in (0, 1)]
    return torch.stack(shifted, 1).flatten(0, 1)


def conv_to_pixel_blocks(x: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """A stride-1 ConvLayer's output as 2x2 pixel blocks (pixel_unshuffle order)."""
    pad, conv = layer
    return F.conv2d(pad(x), phase_kernel(conv.weight), conv.bias.repeat_interleave(4), stride=2)


def output_on_pixel_blocks(layer: OutputConv, x: torch.Tensor) -> torch.Tensor:
    """The output conv on 2x2 pixel blocks, then a pixel shuffle (`pixel_shuffle`).

    In onnxruntime (no memory formats), whose blocked convolutions pad the output channels to 16
    on AVX-512 (8 on AVX2), 3 channels did 5x the work needed: in blocks it computes 12.
    """
    return pixel_shuffle(conv_to_pixel_blocks(x, layer))


def stride2_kernel_on_blocks(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 stride-2 kernel for input given as 2x2 pixel blocks and padded by one block at the
    top and left: output row j reads input rows 2j-1, 2j, 2j+1, the odd row of block j-1 and both
    rows of block j (the same for columns). 7 of the 16 taps per block pair are zero."""
    out_channels, in_channels = weight.shape[:2]
    taps = F.pad(weight, (1, 0, 1, 0)).reshape(out_channels, in_channels, 2, 2, 2, 2)
    return taps.permute(0, 1, 3, 5, 2, 4).reshape(out_channels, 4 * in_channels, 2, 2)


def encode_on_pixel_blocks(
    x: torch.Tensor, first: ConvNormReLU, second: ConvNormReLU
) -> torch.Tensor:
    """second(first(x)), with first's full-resolution output computed and kept as 2x2 pixel
    blocks (`conv_to_pixel_blocks`): 4x the channels at a quarter of the pixels, which fill
    onnxruntime's channel blocks where a slim network's first layer does not."""
    conv, norm, relu = first
    blocks = conv_to_pixel_blocks(x, conv)
    # A channel's four phases side by side are its whole plane: the norm sees the image's
    # statistics, and the shared ones of tiled inference are those of the declared layer.
    plane = relu(norm(blocks.unflatten(1, (-1, 4)).flatten(2, 3)))
    blocks = plane.unflatten(2, (4, -1)).flatten(1, 2)
    (_, conv), norm, relu = second
    # Block -1 replicates block 0, whose odd row is row 1: the reflection of row -1.
    padded = F.pad(blocks, (1, 0, 1, 0), mode="replicate")
    return relu(norm(F.conv2d(padded, stride2_kernel_on_blocks(conv.weight), conv.bias)))


class ExportForm(nn.Module):
    """`network`'s function as export computes it, with the network's own (trained) weights:
    each UpsampleConv by phase convolutions (`upsample_on_phases`), the output conv on pixel
    blocks (`output_on_pixel_blocks`) and, below width BLOCKED_INPUT_BELOW_WIDTH, the first layer
    on pixel blocks into the second (`encode_on_pixel_blocks`); the other layers as they train.
    The network itself is left as it trains.
    """

    def __init__(self, network: TransformerNet):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.pad_and_crop(self.run_layers, x)

    def forward_shared(
        self, x: torch.Tensor, stats: torch.Tensor, use_stats: torch.Tensor, pool: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`TransformerNet.forward_shared`, computed in this form."""
        return self.network.forward_shared(x, stats, use_stats, pool, compute=self)

    def run_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The network's layers on `x` (padded by `TransformerNet.pad_and_crop`), in this form."""
        layers = self.network.layers
        if self.network.width < BLOCKED_INPUT_BELOW_WIDTH:
            x, layers = encode_on_pixel_blocks(x, *layers[:2]), layers[2:]
        for layer in layers:
            if isinstance(layer, UpsampleConv):
                x = upsample_on_phases(layer, x)
            elif isinstance(layer, OutputConv):
                x = output_on_pixel_blocks(layer, x)
            else:
                x = layer(x)
        return x
