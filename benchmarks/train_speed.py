"""Training-step speed: the reference recipe in plain PyTorch (a) vs stylenet's training step (b).

    .venv/bin/python benchmarks/train_speed.py [--size 256 --batch 4 --steps 5 --threads N]

Same network (full width by default), batch, image size, style image and loss value; fp32 on the
CPU. (a) is how pytorch/examples' fast_neural_style computes a step: eager, NCHW, the decoder's
upsampled images built before their convolutions, VGG16 run to relu4_3 on both the stylized output
and the photo. (b0) is stylenet's network (`upsample_conv3x3`: the same function) and
`stylenet.loss.PerceptualLoss`: the photo only as deep as the content layer, the VGG
channels_last, the style's Grams computed once;
(b) adds `stylenet.allocator.keep_freed_memory()`, as train.py runs it; (c) is (b) through
torch.compile, train.py's `compile=true`. All use the same relative loss, so their values on one
batch must agree; the script checks it. Also prints the data loader's images/s alone (decoding,
scaling, cropping with the configured workers).
Needs the real VGG16 weights ($STYLENET_VGG_WEIGHTS or torchvision's download).
"""

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stylenet.allocator import keep_freed_memory
from stylenet.data import PhotoDataModule, load_style_image
from stylenet.loss import PerceptualLoss, VGGFeatures, gram_matrix, relative_error
from stylenet.network import TransformerNet

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TOLERANCE = 1e-5  # relative: the two losses differ only by float summation order
DEFAULT_MALLOC_ROWS = 2  # (a) and (b0) run with glibc's default malloc settings


class ReferenceLoss(nn.Module):
    """The same loss computed the plain way: full VGG on both images, nothing cached but Grams."""

    def __init__(self, loss: PerceptualLoss):
        super().__init__()
        self.loss = loss
        self.layers = loss.style_layers + loss.content_layers
        self.vgg = VGGFeatures(self.layers, channels_last=False)

    def forward(self, output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        vgg = self.vgg
        out_features = vgg(output, self.layers)
        photo_features = vgg(photo, self.layers)  # all layers: as deep as the output's
        style = torch.stack(
            [
                relative_error(gram_matrix(out_features[n]), self.loss.style_grams[n]).mean()
                for n in self.loss.style_layers
            ]
        ).mean()
        content = torch.stack(
            [
                relative_error(out_features[n], photo_features[n].detach()).mean()
                for n in self.loss.content_layers
            ]
        ).mean()
        return self.loss.content_weight * content + self.loss.style_weight * style


def time_steps(step: Callable[[], object], steps: int) -> list[float]:
    """Seconds per call of `step`, after one warm-up call (allocations, kernel choice)."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def training_step(
    network: nn.Module, total: Callable[[torch.Tensor], torch.Tensor], photos: torch.Tensor
) -> Callable[[], float]:
    """One Adam step of `network` on `photos`, `total(photos)` being the scalar loss."""
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = total(photos)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def loader_images_per_second(size: int, batch: int, workers: int, batches: int) -> float:
    """Images/s of the training data loader alone, after its workers have started."""
    data = PhotoDataModule(
        str(SHARED / "photos" / "train"), image_size=size, batch_size=batch, num_workers=workers
    )
    data.setup()
    iterator = iter(data.train_dataloader())
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="training crop (256)")
    parser.add_argument("--batch", type=int, default=4, help="photos per step (4)")
    parser.add_argument("--width", type=int, default=32, help="network width (32)")
    parser.add_argument("--blocks", type=int, default=5, help="residual blocks (5)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers (2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    loss = PerceptualLoss(style_weight=3.0)
    loss.set_style(load_style_image(SHARED / "styles" / "mosaic.jpg", 512))
    reference = ReferenceLoss(loss)
    data = PhotoDataModule(
        str(SHARED / "photos" / "train"), image_size=args.size, batch_size=args.batch, num_workers=0
    )
    data.setup()
    photos = torch.stack([data.train_set[i] for i in range(args.batch)])
    network = TransformerNet(args.width, args.blocks)
    nets = [copy.deepcopy(network) for _ in range(4)]
    nets[0].fuse_upsampling(False)  # pytorch/examples builds the upsampled images
    with torch.no_grad():
        a_value = reference(nets[0](photos), photos).item()
        b_value = loss(nets[1](photos), photos)["total"].item()
    assert abs(a_value - b_value) <= TOLERANCE * abs(a_value), (a_value, b_value)

    def stylenet_total(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda photos: loss(net(photos), photos)["total"]

    # (name, loss of the photos); rows after DEFAULT_MALLOC_ROWS run with keep_freed_memory(), as
    # train.py does: it is process-wide and cannot be undone.
    variants = [
        ("(a) reference: eager, NCHW, full VGG on both", lambda p: reference(nets[0](p), p)),
        (
            "(b0) stylenet eager: fused upsampling, photo to relu2_2, VGG NHWC",
            stylenet_total(nets[1]),
        ),
        ("(b) (b0) + freed memory kept (train.py)", stylenet_total(nets[2])),
        ("(c) (b) + compile=true (torch.compile)", torch.compile(stylenet_total(nets[3]))),
    ]
    steps = [
        training_step(net, total, photos) for net, (_, total) in zip(nets, variants, strict=True)
    ]
    start = time.perf_counter()
    steps[3]()  # the first call compiles
    compile_seconds = time.perf_counter() - start
    flops = []
    for step in steps[:2]:
        with FlopCounterMode(display=False) as counter:
            step()
        flops.append(counter.get_total_flops() / 1e9)
    flops += [flops[1], flops[1]]  # (b) and (c) do (b0)'s work

    print(
        f"torch {torch.__version__}, {args.threads} threads; network width {args.width}, "
        f"{args.blocks} blocks; batch {args.batch} at {args.size} px, fp32"
    )
    print(
        f"loss on one batch: (a) {a_value:.6f}, (b) {b_value:.6f} (relative tolerance "
        f"{TOLERANCE:g})"
    )
    print("| step | GFLOP | min s | median s | images/s (median) | GFLOP/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = []
    for index, ((name, _), step, gflop) in enumerate(zip(variants, steps, flops, strict=True)):
        if index == DEFAULT_MALLOC_ROWS:
            keep_freed_memory()
        times = time_steps(step, args.steps)
        median = statistics.median(times)
        medians.append(median)
        print(
            f"| {name} | {gflop:.0f} | {min(times):.2f} | {median:.2f} | "
            f"{args.batch / median:.2f} | {gflop / median:.0f} |"
        )
    for (name, _), median in zip(variants[1:], medians[1:], strict=True):
        row = name.split()[0].strip("()")
        print(f"speed ratio {row}/a (images/s, median): {medians[0] / median:.2f}")
    print(f"compiling (c) took {compile_seconds:.0f} s, once")
    rate = loader_images_per_second(args.size, args.batch, args.workers, batches=20)
    print(f"data loader alone: {rate:.0f} images/s ({args.workers} workers)")


if __name__ == "__main__":
    main()
