"""The image transformation network of Johnson et al. 2016, as the field uses it today.

"Perceptual Losses for Real-Time Style Transfer and Super-Resolution" (Johnson, Alahi, Fei-Fei,
ECCV 2016), with the two changes everyone adopted since:
- instance normalisation instead of batch normalisation (Ulyanov et al. 2016, "Instance
  Normalization: The Missing Ingredient for Fast Stylization"), and
- nearest-neighbour upsampling followed by a convolution instead of transposed convolutions, which
  leave checkerboard artefacts (Odena et al. 2016, https://distill.pub/2016/deconv-checkerboard/).
  Computed without the upsampled image (`upsample_conv3x3`): the same function, less work.

`TransformerNet.forward` is the computation the network trains with; `TransformerNet.declared`
runs the layers as written (to count their FLOPs, and what the other computations are tested
against). Export computes the same function its own way, from the trained weights
(stylenet.training.export_graph).

Images are float RGB in [0, 1], NCHW. The output is not clamped: the loss sees the raw values and
whoever turns the output into pixels clamps it.
"""

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.errors import StylenetError


class ConvLayer(nn.Sequential):
    """Reflection padding + convolution: zero padding darkens the borders of stylized images."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.ReflectionPad2d(kernel_size // 2),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride),
        )


class OutputConv(ConvLayer):
    """The last ConvLayer (to 3 channels), convolved channels-last.

    With 3 output channels oneDNN's NCHW kernels leave the vector units mostly idle; channels-last
    took 173 instead of 297 ms forward and backward for full width, batch 4, 256 px.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad, conv = self
        return conv(pad(x).contiguous(memory_format=torch.channels_last))


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (same parameters and state_dict keys) whose statistics can be shared, and
    which can hold several styles.

    Tiled inference must normalise every tile with the whole image's statistics: tiles normalised
    with their own get their own colours and contrast, and seams. While `shared` is set (only
    inside `TransformerNet.forward_shared`), the layer records the per-channel mean and variance
    it normalised with, which are, as the boolean flags in `shared` say: the given statistics,
    those of the whole batch pooled (crops of one image), or each image's own.

    With `styles` > 1 it is a conditional instance norm (Dumoulin, Shlens and Kudlur 2017, "A
    Learned Representation for Artistic Style"): a scale and a shift per style and channel
    (`weight`, `bias`: [styles, channels]), the rest of the network shared. While `mix` ([1 or
    batch, styles], set by `TransformerNet.styled`) is set, the layer scales and shifts by that
    convex combination of the styles' vectors: a one-hot row is one style, others are blends.
    """

    def __init__(self, channels: int, styles: int = 1):
        super().__init__(channels, affine=True)
        if styles > 1:
            self.weight = nn.Parameter(torch.ones(styles, channels))
            self.bias = nn.Parameter(torch.zeros(styles, channels))
        self.styles = styles
        self.shared: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.measured: torch.Tensor | None = None
        self.mix: torch.Tensor | None = None

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), [1 or batch, channels]: the style's, or the `mix` of the styles'."""
        if self.styles == 1:
            return self.weight[None], self.bias[None]
        if self.mix is None:
            raise StylenetError(
                f"a network of {self.styles} styles runs inside TransformerNet.styled(weights)"
            )
        return self.mix @ self.weight, self.mix @ self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared is None and self.styles == 1:
            return super().forward(x)
        scale, shift = self.scale_and_shift()
        if self.shared is None:
            normalised = F.instance_norm(x, eps=self.eps)
            return normalised * scale[..., None, None] + shift[..., None, None]
        given, use_given, pool = self.shared
        # keepdim then flatten: in an int8 model onnxruntime runs the convolutions channels-last,
        # where a ReduceMean to [batch, channels] was 15x slower than to [batch, channels, 1, 1].
        mean = x.mean((2, 3), keepdim=True).flatten(1)
        square = (x * x).mean((2, 3), keepdim=True).flatten(1)  # one pass less than var(x)
        mean = torch.where(pool, mean.mean(0, keepdim=True), mean)
        square = torch.where(pool, square.mean(0, keepdim=True), square)
        var = (square - mean * mean).clamp(min=0.0)
        # What this layer's input has, also where it is normalised with the given statistics: a
        # clip's frames measure the next update of their shared statistics in the same pass.
        self.measured = torch.cat([mean, var], 1)
        given_mean, given_var = given.chunk(2, 1)
        mean = torch.where(use_given, given_mean, mean)
        var = torch.where(use_given, given_var, var)
        scale = scale * torch.rsqrt(var + self.eps)
        shift = shift - mean * scale
        return x * scale[..., None, None] + shift[..., None, None]


class ConvNormReLU(nn.Sequential):
    """Convolution, instance norm, ReLU: the building block of the encoder and the decoder."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        styles: int = 1,
    ):
        super().__init__(
            ConvLayer(in_channels, out_channels, kernel_size, stride),
            InstanceNorm(out_channels, styles),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (He et al. 2016), no ReLU after the sum."""

    def __init__(self, channels: int, styles: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormReLU(channels, channels, 3, styles=styles),
            ConvLayer(channels, channels, 3),
            InstanceNorm(channels, styles),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# Nearest x2 upsampling, reflection padding by 1 and a 3x3 convolution with kernel rows k0, k1, k2
# give output row 2i the input rows i-1, i, i (k0 + (k1 + k2)) and row 2i+1 the rows i, i, i+1
# ((k0 + k1) + k2): each input row reaches four output rows with taps k2, k1 + k2, k0 + k1, k0, in
# that order. That is a stride-2 transposed convolution with a 4-tap kernel, TAPS @ rows; the same
# holds for columns. At the borders, reflecting the upsampled image repeats the input's edge, so
# the input is edge-replicated by one pixel first.
TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv3x3(reflection_pad(upsample_nearest_x2(x), 1)) without building the upsampled image.

    As one transposed convolution with a 4x4 kernel tied to the 3x3 one: 16 instead of 36
    multiply-adds per input pixel and channel pair, and no tensor four times the input's size (nor
    its padded copy) to write, read and keep for the backward pass. Odena et al.'s checkerboards
    come from *learned* transposed kernels; this one is the upsample-convolution, exactly.
    """
    taps = TAPS.to(weight)
    kernel = torch.einsum("tk,oikl,ul->iotu", taps, weight, taps)  # (in, out, 4, 4)
    # edge replication by concatenation: under torch.compile the backward of F.pad(mode=
    # "replicate") failed a stride check (torch 2.14) once its gradient was channels-last
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], 2)
    x = torch.cat([x[..., :1], x, x[..., -1:]], 3)
    # output 2 * (n + 2 - 1) - 2 * 3 + 4 = 2n: rows from the replicated pixels fall off the edges
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=3)


class UpsampleConv(nn.Sequential):
    """Nearest x2 upsampling, then a 3x3 conv: no checkerboard, unlike a learned ConvTranspose.

    The layers below define the function (and the state_dict keys). `forward` computes it as a
    transposed convolution (`upsample_conv3x3`: 2.25x fewer multiply-adds, no upsampled copy of
    the input); `declared` runs the layers as written.
    """

    def __init__(self, in_channels: int, out_channels: int, styles: int = 1):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvNormReLU(in_channels, out_channels, 3, styles=styles),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, relu = self[1][0][1], self[1][1], self[1][2]
        return relu(norm(upsample_conv3x3(x, conv.weight, conv.bias)))

    def declared(self, x: torch.Tensor) -> torch.Tensor:
        """The upsampled image, padded and convolved."""
        return super().forward(x)


class TransformerNet(nn.Module):
    """Encoder (9x9 conv, stride-2 convs), residual blocks, decoder (x2 upsamples, 9x9 conv).

    `width` is the channel count of the first layer (32 in the paper); each of the `stages`
    stride-2 convolutions (2 in the paper) halves the resolution and doubles the channels, and the
    decoder undoes them. A third stage runs the residual blocks on 1/64 of the pixels: twice the
    channels (and receptive field) for the same work per block.
    Any input size works: the input is padded to a multiple of `downsample` (and at least 8 and
    twice that) by edge replication and the output is cropped back, so the output always has the
    input's height and width.
    With `styles` > 1 one network paints several styles, which share every convolution and differ
    in their instance norms' scales and shifts (`InstanceNorm`): it runs inside `styled`.
    """

    def __init__(self, width: int = 32, num_res_blocks: int = 5, stages: int = 2, styles: int = 1):
        super().__init__()
        if width < 1 or num_res_blocks < 0 or stages < 1 or styles < 1:
            raise ValueError(
                "width must be >= 1, num_res_blocks >= 0, stages >= 1 and styles >= 1, got "
                f"{width}, {num_res_blocks}, {stages}, {styles}"
            )
        self.width = width
        self.num_res_blocks = num_res_blocks
        self.stages = stages
        self.styles = styles
        # height and width must be multiples of this inside the network
        self.downsample = 2**stages
        channels = [width * 2**stage for stage in range(stages + 1)]
        self.layers = nn.Sequential(
            ConvNormReLU(3, width, 9, styles=styles),
            *(ConvNormReLU(c, 2 * c, 3, stride=2, styles=styles) for c in channels[:-1]),
            *(ResidualBlock(channels[-1], styles) for _ in range(num_res_blocks)),
            *(UpsampleConv(2 * c, c, styles) for c in reversed(channels[:-1])),
            OutputConv(width, 3, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pad_and_crop(self.layers, x)

    def declared(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` computed by the layers as written (`UpsampleConv.declared`): to count their
        FLOPs, and what the network's own computation and export's are tested against."""

        def layers(x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer.declared(x) if isinstance(layer, UpsampleConv) else layer(x)
            return x

        return self.pad_and_crop(layers, x)

    def pad_and_crop(
        self, layers: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """`layers` (the layers, computed one way or another) on `x` padded to what they need,
        cropped back to `x`'s height and width."""
        height, width = x.shape[-2:]
        # Reflection padding needs more pixels than it pads: 4 for the 9x9 convolutions, 1 for
        # the 3x3 ones after the last halving. 2 * max(downsample, 4) is a multiple of downsample.
        least = 2 * max(self.downsample, 4)
        pad_h = max(least - height, (-height) % self.downsample)
        pad_w = max(least - width, (-width) % self.downsample)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return layers(x)[..., :height, :width]

    def norms(self) -> list[InstanceNorm]:
        """The instance norms, in the order they run."""
        return [m for m in self.modules() if isinstance(m, InstanceNorm)]

    def style_parameter_names(self) -> set[str]:
        """The state-dict keys of the norms' scales and shifts: all that is a style's own."""
        return {
            f"{name}.{key}"
            for name, module in self.named_modules()
            if isinstance(module, InstanceNorm)
            for key in ("weight", "bias")
        }

    def norm_channels(self) -> list[int]:
        """Channels of each instance norm, in order: each has a mean and a variance per channel."""
        return [norm.num_features for norm in self.norms()]

    def forward_shared(
        self,
        x: torch.Tensor,
        stats: torch.Tensor,
        use_stats: torch.Tensor,
        pool: torch.Tensor,
        compute: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`, also returning the statistics every instance norm measured on its input.

        Statistics are [batch, 2 * sum(norm_channels())]: per layer, the means then the variances.
        Where the boolean `use_stats` is true, every layer normalises with `stats` ([1, K] or
        [batch, K]) instead of its own: tiles of one image all normalised like the whole image.
        What the layers measure is then their input under those: for an image given its own
        statistics, its own again, so a clip's moving statistics take each frame's measurement
        from the frame's own pass (`runtime.temporal`). Where the boolean `pool` is true, the
        layers pool their statistics over the batch: crops of one image normalised together
        measure the statistics of the image at its own scale.
        `compute` computes the network's function another way through the same layers
        (`declared`, export's form) instead of `forward`.
        """
        norms = self.norms()
        chunks = stats.split([2 * channels for channels in self.norm_channels()], dim=1)
        for norm, chunk in zip(norms, chunks, strict=True):
            norm.shared = (chunk, use_stats, pool)
        try:
            out = (compute or self)(x)
            measured = torch.cat([norm.measured for norm in norms], 1)
        finally:
            for norm in norms:
                norm.shared = norm.measured = None
        return out, measured

    @contextlib.contextmanager
    def styled(self, weights: torch.Tensor | None) -> Iterator[None]:
        """Run the network inside this with the styles weighted by `weights` ([1 or batch,
        styles], each row summing to 1: a one-hot row is one style, others blend them); None, or
        a network of one style: nothing to choose."""
        if weights is None or self.styles == 1:
            yield
            return
        if weights.dim() != 2 or weights.shape[1] != self.styles:
            raise StylenetError(
                f"style weights must be [1 or batch, {self.styles}], got {list(weights.shape)}"
            )
        norms = self.norms()
        for norm in norms:
            norm.mix = weights
        try:
            yield
        finally:
            for norm in norms:
                norm.mix = None

    def receptive_radius(self) -> int:
        """How far (in input pixels) an output pixel sees: tiles need at least this much overlap.

        Each k x k convolution adds k // 2 pixels at its layer's scale (1, 2, 4... input pixels);
        a stride-2 convolution, undone later by a nearest upsampling, adds one more pixel at its
        scale (an output pixel repeats its neighbour's value). Modules run in registration order.
        """
        radius, scale = 0, 1
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                stride = module.stride[0]
                radius += (module.kernel_size[0] // 2 + stride - 1) * scale
                scale *= stride
            elif isinstance(module, nn.Upsample):
                scale //= int(module.scale_factor)
        return radius
