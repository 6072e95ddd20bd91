import pytest
import torch
from torch import nn

from stylenet.network import TransformerNet


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 65), (64, 64), (257, 191)])
def test_output_has_the_input_size(size):
    net = TransformerNet(width=4, num_res_blocks=1)
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_width_and_blocks_set_the_size():
    small, big = TransformerNet(8, 1), TransformerNet(16, 3)
    n_params = [sum(p.numel() for p in net.parameters()) for net in (small, big)]
    assert n_params[0] < n_params[1]
    blocks = [m for m in big.modules() if m.__class__.__name__ == "ResidualBlock"]
    assert len(blocks) == 3


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
