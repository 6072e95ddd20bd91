import pytest
import torch
from torch import nn

from helpers import (
    NETWORKS,
    UPSAMPLED_SIZES,
    assert_computes_the_declared_network,
    assert_computes_upsample_conv,
)
from stylenet.training.network import TransformerNet, UpsampleConv, upsample_conv3x3


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 65), (64, 64), (257, 191)])
def test_output_has_the_input_size(size, stages):
    net = TransformerNet(width=4, num_res_blocks=1, stages=stages)
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_width_blocks_and_stages_set_the_size():
    small, big = TransformerNet(8, 1), TransformerNet(16, 3)
    n_params = [sum(p.numel() for p in net.parameters()) for net in (small, big)]
    assert n_params[0] < n_params[1]
    blocks = [m for m in big.modules() if m.__class__.__name__ == "ResidualBlock"]
    assert len(blocks) == 3
    deep = TransformerNet(8, 1, stages=3)
    assert deep.downsample == 8 and small.downsample == 4
    assert [b.body[0][0][1].in_channels for b in deep.modules() if hasattr(b, "body")] == [64]
    assert sum(isinstance(m, UpsampleConv) for m in deep.modules()) == 3


def test_no_transposed_convolutions_and_reflection_padding():
    net = TransformerNet()
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    pads = [m for m in net.modules() if isinstance(m, nn.ReflectionPad2d)]
    assert len(pads) == len(convs) and all(c.padding == (0, 0) for c in convs)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == len(convs) - 1


def test_output_depends_on_the_whole_image_not_the_padding():
    """Cropping back must return the input's pixels, not the replicated border."""
    torch.manual_seed(0)
    net = TransformerNet(width=4, num_res_blocks=1).eval()
    x = torch.rand(1, 3, 30, 30)
    y = net(x)
    x2 = x.clone()
    x2[..., -1, -1] += 0.5  # a change in the last pixel shows up in the last output pixel
    assert not torch.allclose(net(x2)[..., -1, -1], y[..., -1, -1])


def test_shared_statistics():
    """forward_shared: own statistics as InstanceNorm2d, given ones instead, or pooled ones."""
    torch.manual_seed(0)
    net = TransformerNet(width=4, num_res_blocks=1).eval()
    x = torch.rand(2, 3, 32, 48)
    zeros = torch.zeros(1, 2 * sum(net.norm_channels()))
    no, yes = torch.tensor(False), torch.tensor(True)
    with torch.no_grad():
        plain = net(x)
        own, stats = net.forward_shared(x, zeros, no, no)
        assert torch.allclose(own, plain, atol=1e-5) and stats.shape == (2, zeros.shape[1])
        first_like_second, measured = net.forward_shared(x[:1], stats[1:], yes, no)
        assert not torch.allclose(first_like_second, plain[:1], atol=1e-2)
        # Under another image's statistics the first layer still measures its own input, and
        # the later ones measure something else.
        first = slice(0, 2 * net.norm_channels()[0])
        assert torch.allclose(measured[:, first], stats[:1, first], atol=1e-5)
        assert not torch.allclose(measured, stats[:1], atol=1e-3)
        # The second image given its own statistics is the second image, and measures them.
        second, again = net.forward_shared(x[1:], stats[1:], yes, no)
        assert torch.allclose(second, plain[1:], atol=1e-5)
        assert torch.allclose(again, stats[1:], atol=1e-5)
        twice, pooled = net.forward_shared(x[:1].expand(2, -1, -1, -1), zeros, no, yes)
        assert torch.allclose(twice, plain[:1].expand(2, -1, -1, -1), atol=1e-5)
        assert torch.allclose(pooled, stats[:1].expand(2, -1), atol=1e-4)
        _, mixed = net.forward_shared(x, zeros, no, yes)
        first_means = slice(0, net.norm_channels()[0])  # the first layer sees the images alone
        assert torch.allclose(mixed[0, first_means], stats[:, first_means].mean(0), atol=1e-5)


@pytest.mark.parametrize("size", UPSAMPLED_SIZES)
def test_upsample_conv_computes_the_layers_it_declares(size):
    """Training's transposed convolution equals upsample, reflection pad and 3x3 conv."""
    assert_computes_upsample_conv(upsample_conv3x3, lambda layer, x: layer(x), size)


@pytest.mark.parametrize(("width", "stages", "size"), NETWORKS)
def test_training_computes_the_declared_network(width: int, stages: int, size: tuple):
    """`forward`, the network as it trains, is the function its layers declare."""
    assert_computes_the_declared_network(lambda network: network, width, stages, size)


def test_checkpoints_unchanged():
    """The shareable instance norm has nn.InstanceNorm2d's parameters and no buffers."""
    net = TransformerNet(width=4, num_res_blocks=1)
    assert not list(net.buffers())
    assert [k for k in net.state_dict() if k.startswith("layers.0.")] == [
        "layers.0.0.1.weight",
        "layers.0.0.1.bias",
        "layers.0.1.weight",
        "layers.0.1.bias",
    ]


@pytest.mark.parametrize(
    ("blocks", "stages", "radius"), [(0, 2, 17), (2, 2, 17 + 2 * 8), (1, 3, 29 + 16), (0, 1, 11)]
)
def test_receptive_radius(blocks: int, stages: int, radius: int):
    """With the statistics fixed, one pixel changes outputs exactly receptive_radius() away.

    9x9 convolutions 4 + 4, each stride-2 one 2 pixels at its scale, each upsampling one 1, each
    residual block 2 at the lowest scale: 17 + 8 per block for two stages, 29 + 16 for three.
    """
    torch.manual_seed(0)
    net = TransformerNet(width=4, num_res_blocks=blocks, stages=stages).eval().double()
    x = torch.rand(1, 3, 16, 160, dtype=torch.float64)
    no, yes = torch.tensor(False), torch.tensor(True)
    with torch.no_grad():
        _, stats = net.forward_shared(x, torch.zeros(1, 2 * sum(net.norm_channels())), no, no)
        before = net.forward_shared(x, stats, yes, no)[0]
        reach = 0
        for column in range(76, 84):  # every phase of up to three stride-2 convolutions
            changed = x.clone()
            changed[..., column] += 1
            after = net.forward_shared(changed, stats, yes, no)[0]
            moved = (after - before).abs().amax((0, 1, 2)).nonzero().flatten()
            reach = max(reach, column - int(moved.min()), int(moved.max()) - column)
    assert reach == net.receptive_radius() == radius
