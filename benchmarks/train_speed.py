"""Training-step speed: the reference recipe in plain PyTorch (a) vs stylenet's training step (b).

    .venv/bin/python benchmarks/train_speed.py [--size 256 --batch 4 --rounds 4 --steps 2]
    python benchmarks/train_speed.py --device cuda --rounds 2 --steps 20   # on a GPU

Same network (full width by default), batch, image size, style image and loss value; fp32 on the
CPU. (a) is how pytorch/examples' fast_neural_style computes a step: eager, NCHW, the decoder's
upsampled images built before their convolutions, VGG16 run to relu4_3 on both the stylized output
and the photo. (b0) is stylenet's network (`upsample_conv3x3`: the same function) and
`stylenet.training.loss.PerceptualLoss`: the photo only as deep as the content layer, the VGG
channels_last, the style's Grams computed once;
(b) adds `stylenet.training.allocator.keep_freed_memory()`, as train.py runs it; (c) is (b) through
torch.compile, train.py's `compile=true`. All use the same relative loss, so their values on one
batch must agree; the script checks it. Each variant runs in a process of its own (the allocator
setting cannot be undone), one after the other, for --rounds rounds of --steps timed steps after
a warm-up step: the VM's drift over minutes then touches every variant alike. Also prints the data
loader's images/s alone (decoding, scaling, cropping with the configured workers).
On CPUs with bf16 units (AMX), `--variants a,b,b_bf16` adds (b) in bf16 autocast, as
`trainer=cpu_bf16` runs it (elsewhere bf16 is emulated, ~40x slower: not a default variant).
With --device cuda the variants are the GPU's: (a), (b0) in fp32 (TF32 convolutions, PyTorch's
default), then bf16 autocast as `trainer=gpu` runs it, the network channels_last too, and
torch.compile in fp32 and bf16; the losses are compared with TF32 off.
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

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stylenet.training.allocator import keep_freed_memory
from stylenet.training.data import PhotoDataModule, load_style_image
from stylenet.training.loss import PerceptualLoss, VGGFeatures, gram_matrix, relative_error
from stylenet.training.network import TransformerNet
from stylenet.training.paths import shared_data_dir

SHARED = shared_data_dir()
TOLERANCE = 1e-5  # relative: the two losses differ only by float summation order


@dataclass(frozen=True)
class Variant:
    label: str
    keep_memory: bool = False  # stylenet.training.allocator.keep_freed_memory (CPU memory)
    compiled: bool = False  # torch.compile of network and loss
    bf16: bool = False  # bf16 autocast (trainer=gpu's bf16-mixed)
    channels_last: bool = False  # the transformer network's weights and input NHWC


VARIANTS = {
    "a": Variant("(a) reference: eager, NCHW, full VGG on both"),
    "b0": Variant("(b0) stylenet eager: fused upsampling, photo to the content layer, VGG NHWC"),
    "b": Variant("(b) (b0) + freed memory kept (train.py)", keep_memory=True),
    "c": Variant("(c) (b) + compile=true (torch.compile)", keep_memory=True, compiled=True),
    "b_bf16": Variant("(b) + bf16 autocast (trainer=cpu_bf16)", keep_memory=True, bf16=True),
    "bf16": Variant("(b0) + bf16 autocast (trainer=gpu)", bf16=True),
    "bf16_cl": Variant(
        "(b0) + bf16 autocast + network channels_last", bf16=True, channels_last=True
    ),
    "c_fp32": Variant("(b0) + torch.compile, fp32", compiled=True),
    "c_bf16": Variant("(b0) + torch.compile + bf16 autocast", compiled=True, bf16=True),
}
DEFAULT_VARIANTS = {"cpu": "a,b0,b,c", "cuda": "a,b0,bf16,bf16_cl,c_fp32,c_bf16"}


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
                relative_error(gram_matrix(out_features[n]), self.loss.style_grams[0][n]).mean()
                for n in self.loss.style_layers
            ]
        ).mean()
        content = torch.stack(
            [
                relative_error(out_features[n], photo_features[n].detach()).mean()
                for n in self.loss.content_layers
            ]
        ).mean()
        return self.loss.content_weight * content + self.loss.style_weights[0] * style


def time_steps(step: Callable[[], object], steps: int) -> tuple[float, list[float]]:
    """Seconds of a warm-up call of `step` (allocations, kernel choice, compiling), then of each
    of `steps` calls. Each step ends with `.item()`, so GPU steps are timed to their end."""
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
    torch.backends.cudnn.benchmark = True  # as trainer=gpu runs (Lightning's default on CUDA)
    loss = PerceptualLoss()
    loss.set_style(load_style_image(SHARED / "styles" / "mosaic.jpg", 512))
    data = PhotoDataModule(
        str(SHARED / "photos" / "train"), image_size=args.size, batch_size=args.batch, num_workers=0
    )
    data.setup()
    photos = torch.stack([data.train_set[i] for i in range(args.batch)])
    network = TransformerNet(args.width, args.blocks, args.stages)
    device = torch.device(args.device)
    reference = ReferenceLoss(loss).to(device)  # loss's buffers moved with it: shared
    return Setup(loss, reference, photos.to(device), network.to(device))


def variant_step(variant: str, setup: Setup) -> Callable[[], float]:
    """One training step of `variant` on a copy of the setup's network."""
    how = VARIANTS[variant]
    network = copy.deepcopy(setup.network)
    photos = setup.photos
    if how.channels_last:
        network = network.to(memory_format=torch.channels_last)
        photos = photos.contiguous(memory_format=torch.channels_last)
    if variant == "a":

        def total(photos: torch.Tensor) -> torch.Tensor:
            # the layers as declared: pytorch/examples builds the upsampled images
            return setup.reference(network.declared(photos), photos)
    else:

        def total(photos: torch.Tensor) -> torch.Tensor:
            return setup.loss(network(photos), photos)["total"]

    if how.bf16:
        plain_total = total

        def total(photos: torch.Tensor) -> torch.Tensor:
            with torch.autocast(photos.device.type, torch.bfloat16):
                return plain_total(photos)

    if how.keep_memory:
        keep_freed_memory()  # process-wide: this process runs one variant
    return training_step(network, torch.compile(total) if how.compiled else total, photos)


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """`time_steps` of one variant in a fresh process: {"warm_up": s, "times": [s, ...]}."""
    command = [sys.executable, __file__, "--variant", variant]
    for name in ("size", "batch", "width", "blocks", "stages", "steps", "threads", "device"):
        command += [f"--{name}", str(getattr(args, name))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """The command line and the variants to time, (a) first among them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="training crop (256)")
    parser.add_argument("--batch", type=int, default=4, help="photos per step (4)")
    parser.add_argument("--width", type=int, default=32, help="network width (32)")
    parser.add_argument("--blocks", type=int, default=5, help="residual blocks (5)")
    parser.add_argument("--stages", type=int, default=2, help="stride-2 stages (2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--variants", help="comma-separated keys of VARIANTS (device's default)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over the variants (4)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant a round (2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers (2)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # in a child
    args = parser.parse_args()
    variants = (args.variants or DEFAULT_VARIANTS[torch.device(args.device).type]).split(",")
    if "a" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: (a) and any of {', '.join(VARIANTS)}")
    return args, variants


def flops_per_step(setup: Setup, variants: list[str]) -> dict[str, float]:
    """GFLOP of one step of each variant: (a) and (b0) counted, the others do (b0)'s work."""
    flops = {}
    for variant in ("a", "b0"):
        step = variant_step(variant, setup)
        with FlopCounterMode(display=False) as counter:
            step()
        flops[variant] = counter.get_total_flops() / 1e9
    flops.update({variant: flops["b0"] for variant in variants if variant != "a"})
    return flops


def print_results(
    args: argparse.Namespace,
    variants: list[str],
    times: dict[str, list[float]],
    warm_ups: dict[str, list[float]],
    flops: dict[str, float],
) -> None:
    """The table of step times per variant, their ratios to (a), and compile times."""
    print(f"{args.rounds} rounds x {args.steps} steps per variant, each round in fresh processes")
    print("| step | GFLOP | min s | median s | images/s (median) | GFLOP/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    for variant in variants:
        median = medians[variant]
        print(
            f"| {VARIANTS[variant].label} | {flops[variant]:.0f} | "
            f"{min(times[variant]):.3g} | {median:.3g} | "
            f"{args.batch / median:.2f} | {flops[variant] / median:.0f} |"
        )
    for variant in variants[1:]:
        print(
            f"speed ratio {variant}/a (images/s, median): {medians['a'] / medians[variant]:.2f}; "
            f"on the minimums: {min(times['a']) / min(times[variant]):.2f}"
        )
    for variant in variants:
        if VARIANTS[variant].compiled:
            seconds = warm_ups[variant][0] - medians[variant]
            print(f"compiling {variant} took {seconds:.0f} s in the first round (torch caches it)")


def main() -> None:
    args, variants = parse_args()
    if args.variant:
        warm_up, times = time_steps(variant_step(args.variant, make_setup(args)), args.steps)
        print(json.dumps({"warm_up": warm_up, "times": times}))
        return

    setup = make_setup(args)
    torch.backends.cudnn.allow_tf32 = False  # the comparison in true fp32 on GPUs too
    with torch.no_grad():
        a_value = setup.reference(setup.network.declared(setup.photos), setup.photos).item()
        b_value = setup.loss(setup.network(setup.photos), setup.photos)["total"].item()
    torch.backends.cudnn.allow_tf32 = True
    assert abs(a_value - b_value) <= TOLERANCE * abs(a_value), (a_value, b_value)
    flops = flops_per_step(setup, variants)

    where = torch.cuda.get_device_name() if setup.photos.is_cuda else f"{args.threads} threads"
    print(
        f"torch {torch.__version__}, {where}; network width {args.width}, {args.blocks} blocks, "
        f"{args.stages} stages; batch {args.batch} at {args.size} px, fp32 unless said"
    )
    print(
        f"loss on one batch: (a) {a_value:.6f}, (b) {b_value:.6f} (relative tolerance "
        f"{TOLERANCE:g})"
    )
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    warm_ups: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_ in range(args.rounds):
        for variant in variants:
            result = run_variant(variant, args)
            times[variant] += result["times"]
            warm_ups[variant].append(result["warm_up"])
            steps = " ".join(f"{t:.3g}" for t in result["times"])
            print(f"round {round_ + 1}, {variant}: {steps} s", flush=True)  # partial runs count
    print_results(args, variants, times, warm_ups, flops)
    rate = loader_images_per_second(args.size, args.batch, args.workers, batches=20)
    print(f"data loader alone: {rate:.0f} images/s ({args.workers} workers)")


if __name__ == "__main__":
    main()
