"""Training-step speed: the reference recipe in plain PyTorch (a) vs stylenet's training step (b).

    .venv/bin/python benchmarks/train_speed.py [--size 256 --batch 4 --rounds 4 --steps 2]

Same network (full width by default), batch, image size, style image and loss value; fp32 on the
CPU. (a) is how pytorch/examples' fast_neural_style computes a step: eager, NCHW, the decoder's
upsampled images built before their convolutions, VGG16 run to relu4_3 on both the stylized output
and the photo. (b0) is stylenet's network (`upsample_conv3x3`: the same function) and
`stylenet.loss.PerceptualLoss`: the photo only as deep as the content layer, the VGG
channels_last, the style's Grams computed once;
(b) adds `stylenet.allocator.keep_freed_memory()`, as train.py runs it; (c) is (b) through
torch.compile, train.py's `compile=true`. All use the same relative loss, so their values on one
batch must agree; the script checks it. Each variant runs in a process of its own (the allocator
setting cannot be undone), one after the other, for --rounds rounds of --steps timed steps after
a warm-up step: the VM's drift over minutes then touches every variant alike. Also prints the data
loader's images/s alone (decoding, scaling, cropping with the configured workers).
Needs the real VGG16 weights ($STYLENET_VGG_WEIGHTS or torchvision's download).
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
# key: (row label, freed memory kept, torch.compile)
VARIANTS = {
    "a": ("(a) reference: eager, NCHW, full VGG on both", False, False),
    "b0": ("(b0) stylenet eager: fused upsampling, photo to relu2_2, VGG NHWC", False, False),
    "b": ("(b) (b0) + freed memory kept (train.py)", True, False),
    "c": ("(c) (b) + compile=true (torch.compile)", True, True),
}


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


def time_steps(step: Callable[[], object], steps: int) -> tuple[float, list[float]]:
    """Seconds of a warm-up call of `step` (allocations, kernel choice, compiling), then of each
    of `steps` calls."""
    start = time.perf_counter()
    step()
    warm_up = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return warm_up, times


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


@dataclass
class Setup:
    """What every variant shares: the loss (style Grams), the photos and the initial network."""

    loss: PerceptualLoss
    reference: ReferenceLoss
    photos: torch.Tensor
    network: TransformerNet


def make_setup(args: argparse.Namespace) -> Setup:
    """The same loss, batch and initial weights in every process (fixed seed)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loss = PerceptualLoss(style_weight=3.0)
    loss.set_style(load_style_image(SHARED / "styles" / "mosaic.jpg", 512))
    data = PhotoDataModule(
        str(SHARED / "photos" / "train"), image_size=args.size, batch_size=args.batch, num_workers=0
    )
    data.setup()
    photos = torch.stack([data.train_set[i] for i in range(args.batch)])
    network = TransformerNet(args.width, args.blocks)
    return Setup(loss, ReferenceLoss(loss), photos, network)


def variant_step(variant: str, setup: Setup) -> Callable[[], float]:
    """One training step of `variant` on a copy of the setup's network."""
    _, keep_memory, compiled = VARIANTS[variant]
    network = copy.deepcopy(setup.network)
    if variant == "a":
        network.fuse_upsampling(False)  # pytorch/examples builds the upsampled images

        def total(photos: torch.Tensor) -> torch.Tensor:
            return setup.reference(network(photos), photos)
    else:

        def total(photos: torch.Tensor) -> torch.Tensor:
            return setup.loss(network(photos), photos)["total"]

    if keep_memory:
        keep_freed_memory()  # process-wide: this process runs one variant
    return training_step(network, torch.compile(total) if compiled else total, setup.photos)


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """`time_steps` of one variant in a fresh process: {"warm_up": s, "times": [s, ...]}."""
    command = [sys.executable, __file__, "--variant", variant]
    for name in ("size", "batch", "width", "blocks", "steps", "threads"):
        command += [f"--{name}", str(getattr(args, name))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="training crop (256)")
    parser.add_argument("--batch", type=int, default=4, help="photos per step (4)")
    parser.add_argument("--width", type=int, default=32, help="network width (32)")
    parser.add_argument("--blocks", type=int, default=5, help="residual blocks (5)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over the variants (4)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant a round (2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers (2)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # in a child
    args = parser.parse_args()
    if args.variant:
        warm_up, times = time_steps(variant_step(args.variant, make_setup(args)), args.steps)
        print(json.dumps({"warm_up": warm_up, "times": times}))
        return

    setup = make_setup(args)
    with torch.no_grad():
        plain = copy.deepcopy(setup.network).fuse_upsampling(False)
        a_value = setup.reference(plain(setup.photos), setup.photos).item()
        b_value = setup.loss(setup.network(setup.photos), setup.photos)["total"].item()
    assert abs(a_value - b_value) <= TOLERANCE * abs(a_value), (a_value, b_value)
    flops = {}
    for variant in ("a", "b0"):  # (b) and (c) do (b0)'s work
        step = variant_step(variant, setup)
        with FlopCounterMode(display=False) as counter:
            step()
        flops[variant] = counter.get_total_flops() / 1e9
    flops["b"] = flops["c"] = flops["b0"]

    print(
        f"torch {torch.__version__}, {args.threads} threads; network width {args.width}, "
        f"{args.blocks} blocks; batch {args.batch} at {args.size} px, fp32"
    )
    print(
        f"loss on one batch: (a) {a_value:.6f}, (b) {b_value:.6f} (relative tolerance "
        f"{TOLERANCE:g})"
    )
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    warm_ups: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            result = run_variant(variant, args)
            times[variant] += result["times"]
            warm_ups[variant].append(result["warm_up"])
    print(f"{args.rounds} rounds x {args.steps} steps per variant, each round in fresh processes")
    print("| step | GFLOP | min s | median s | images/s (median) | GFLOP/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    for variant, (name, _, _) in VARIANTS.items():
        median = medians[variant]
        print(
            f"| {name} | {flops[variant]:.0f} | {min(times[variant]):.2f} | {median:.2f} | "
            f"{args.batch / median:.2f} | {flops[variant] / median:.0f} |"
        )
    for variant in list(VARIANTS)[1:]:
        print(
            f"speed ratio {variant}/a (images/s, median): {medians['a'] / medians[variant]:.2f}; "
            f"on the minimums: {min(times['a']) / min(times[variant]):.2f}"
        )
    compile_seconds = warm_ups["c"][0] - statistics.median(times["c"])
    print(f"compiling (c) took {compile_seconds:.0f} s in the first round (torch caches it)")
    rate = loader_images_per_second(args.size, args.batch, args.workers, batches=20)
    print(f"data loader alone: {rate:.0f} images/s ({args.workers} workers)")


if __name__ == "__main__":
    main()
