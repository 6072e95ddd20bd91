"""Inference speed and memory of exported models in onnxruntime, fp32 and int8, whole and tiled.

    .venv/bin/python benchmarks/inference.py [--width 32 8 8 8 --blocks 5 4 3 5 --stages 2 ...]
        [--trained A.onnx B.onnx ...] [--threads N --repeats 5 --tiled 6000x4000]

For each network (width, residual blocks and stages, paired), random weights (speed does not depend
on training) are exported as `export.py` does, or with --trained the given exported models are used
instead (their shapes from their training config). Each is quantized as `stylenet quantize` does
(calibrated on ../shared/data/photos/train). Each case then runs in a fresh process, through the
runtime users get (`Stylizer`), so that its peak resident memory is its own: batch 1 at 512x512 and
1080x1080 run whole, the tiled size in the default tiles. Trained models also get their quality
figures (benchmarks/quality.py's style and content errors and total training loss, mean over --count
held-out photos at most --size px). Prints Markdown tables.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stylenet.training.paths import shared_data_dir

SIZES = ((512, 512), (1080, 1080))
DATA_DIR = shared_data_dir()
FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_int8")


def measure(model: Path, width: int, height: int, threads: int, repeats: int, tiled: bool) -> dict:
    """ms per image (median and fastest of `repeats` after one warm-up) and this process's peak
    RSS in MB. The fastest run is the steadier figure on a VM whose neighbours come and go."""
    from stylenet.runtime.stylizer import Stylizer  # torch-free, as users run it

    stylizer = Stylizer(model, threads=threads, tile=None if tiled else 0)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats + (0 if tiled else 1)):  # a tiled image is warm-up enough for itself
        start = time.perf_counter()
        stylizer.stylize(image)
        times.append((time.perf_counter() - start) * 1000)
    timed = times[-repeats:]
    return {"ms": statistics.median(timed), "min_ms": min(timed), "rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, as ru_maxrss counts the parent's too (Linux
    carries it over fork and exec, and the parent here holds torch)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        / 1024
    )


def run_case(model: Path, size: tuple[int, int], args: argparse.Namespace, tiled: bool) -> dict:
    """`measure` in a fresh process: peak RSS counts this case only."""
    command = [sys.executable, __file__, "--measure", str(model)]
    command += ["--case-size", f"{size[1]}x{size[0]}"]
    command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    result = subprocess.run([*command, *(["--tile"] if tiled else [])], capture_output=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr.decode()}")
    return json.loads(result.stdout)


def gflop(shape: tuple[int, int, int], height: int, image_width: int) -> float:
    """Convolution GFLOP (2 per multiply-add) of one image through the network as declared,
    counted on shapes only. The export form does more, in less time: 8 x 3 +11%, 8 x 5 +9%,
    32 x 5 +1% (zero taps of its kernels on 2x2 pixel blocks)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stylenet.training.network import TransformerNet

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        TransformerNet(*shape).declared(torch.empty(1, 3, height, image_width))
    return counter.get_total_flops() / 1e9


def export_random(shape: tuple[int, int, int], folder: Path) -> Path:
    """A random-weight network as export.py writes it."""
    import onnx
    import torch

    from stylenet.training.export import network_metadata, to_onnx
    from stylenet.training.network import TransformerNet

    torch.manual_seed(0)
    network = TransformerNet(*shape).eval()
    model = to_onnx(network, opset=18)
    onnx.helper.set_model_props(model, network_metadata(network))  # what tiling reads
    path = folder / "w{}b{}s{}.onnx".format(*shape)
    onnx.save(model, path)
    return path


def with_int8(fp32: Path, int8: Path) -> dict[str, Path]:
    """The model and its int8 copy, as `stylenet quantize` makes it."""
    from stylenet.runtime.quantize import quantize_model

    quantize_model(fp32, DATA_DIR / "photos" / "train", int8, count=8)
    return {"fp32": fp32, "int8": int8}


def trained_shape(model: Path) -> tuple[int, int, int]:
    """(width, residual blocks, stages) that an exported model's training config records."""
    import onnx

    props = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    network = json.loads(props.get("training_config") or "{}").get("network") or {}
    if "width" not in network or "num_res_blocks" not in network:
        sys.exit(f"{model} records no network shape: export it with export.py")
    return network["width"], network["num_res_blocks"], network.get("stages", 2)


def quality_scorer(model: Path, count: int, size: int) -> Callable[[Path], str]:
    """Mean style error, content error and total loss on held-out photos, as table cells, of
    `model` or a copy of it (its int8 one): loss, style and photos are prepared once."""
    import quality  # benchmarks/quality.py, beside this script
    from stylenet.training.optimize import load_photo

    judge = quality.Judge.of(quality.load_model(model), None, 512, None)
    photos = {
        p.name: load_photo(p, size)[0]
        for p in quality.pick_photos(DATA_DIR / "photos" / "val", count)
    }

    def cells(variant: Path) -> str:
        loaded = quality.load_model(variant)
        results = [
            quality.measure(loaded, judge.loss, judge.scorer, photo, name)[0]
            for name, photo in photos.items()
        ]
        mean = quality.mean_result(results)
        return f"{mean.style:.3f} | {mean.content:.3f} | {mean.total:.3f}"

    return cells


def label_of(shape: tuple[int, int, int]) -> str:
    """ "width x blocks", with the stages when not the paper's two."""
    width, blocks, stages = shape
    return f"{width} x {blocks}" + (f", {stages} stages" if stages != 2 else "")


def cpu() -> str:
    """The CPU model and the vector extensions that matter here, from /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor() or platform.machine()
    text = cpuinfo.read_text()
    name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line)
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
    return f"{name} ({', '.join(f for f in FLAGS if f in flags) or 'no AVX2'})"


def parse_args() -> argparse.Namespace:
    """The command line, with --width, --blocks and --stages paired up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, nargs="+", default=[32, 8, 8, 8])
    parser.add_argument("--blocks", type=int, nargs="+", default=[5, 4, 3, 5])
    parser.add_argument("--stages", type=int, nargs="+", help="stride-2 stages (2 each)")
    parser.add_argument("--trained", type=Path, nargs="+", help="exported models to measure")
    parser.add_argument("--count", type=int, default=8, help="held-out photos for quality (8)")
    parser.add_argument("--size", type=int, default=512, help="their longer side, max (512)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per whole-image case")
    parser.add_argument("--tiled", default="6000x4000", help="WxH run tiled (full width only)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one case, in a child
    parser.add_argument("--case-size", help=argparse.SUPPRESS)
    parser.add_argument("--tile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.stages = args.stages or [2] * len(args.width)
    if not len(args.width) == len(args.blocks) == len(args.stages):
        parser.error("--width, --blocks and --stages pair up: give as many of each")
    if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", args.tiled):
        parser.error(f"--tiled takes WIDTHxHEIGHT in pixels, e.g. 6000x4000, got {args.tiled!r}")
    return args


def main() -> None:
    args = parse_args()
    if args.measure:
        width, height = map(int, args.case_size.split("x"))
        repeats = 1 if args.tile else args.repeats
        print(json.dumps(measure(args.measure, width, height, args.threads, repeats, args.tile)))
        return
    shapes = list(zip(args.width, args.blocks, args.stages, strict=True))
    if args.trained:
        shapes = [trained_shape(model) for model in args.trained]

    import onnxruntime as ort

    weights = "trained weights" if args.trained else "random weights"
    print(f"CPU: {cpu()}; {os.cpu_count()} logical cores; onnxruntime {ort.__version__}")
    print(f"{args.threads} threads, batch 1, {weights}, median (fastest) of {args.repeats} runs")
    columns = ["network", "precision"]
    if args.trained:
        print(f"quality: mean over {args.count} held-out photos, longer side <= {args.size} px")
        columns += ["style error", "content error", "total loss"]
    print()
    columns += [f"{w}x{h} {c}" for h, w in SIZES for c in ("GFLOP", "ms (min)", "peak MB")]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * (len(columns) - 2))
    tiled_size = tuple(map(int, args.tiled.split("x")))[::-1]
    tiled_rows = []
    with tempfile.TemporaryDirectory() as folder:
        for i, shape in enumerate(shapes):
            fp32 = args.trained[i] if args.trained else export_random(shape, Path(folder))
            flops = [gflop(shape, *size) for size in SIZES]
            label = label_of(shape) + (f" ({fp32.name})" if args.trained else "")
            score = quality_scorer(fp32, args.count, args.size) if args.trained else None
            for precision, model in with_int8(fp32, Path(folder) / f"{i}-int8.onnx").items():
                cells = [label, precision]
                if score:
                    cells.append(score(model))
                for size, g in zip(SIZES, flops, strict=True):
                    case = run_case(model, size, args, tiled=False)
                    ms = f"{case['ms']:.0f} ({case['min_ms']:.0f})"
                    cells.append(f"{g:.0f} | {ms} | {case['rss_mb']:.0f}")
                print(f"| {' | '.join(cells)} |", flush=True)
                if i == 0:
                    tiled_rows.append((precision, run_case(model, tiled_size, args, tiled=True)))
    print_tiled(tiled_rows, args.tiled, label_of(shapes[0]))


def print_tiled(rows: list[tuple[str, dict]], size: str, label: str) -> None:
    """The tiled table: the first network at `size` (WxH), one run per precision."""
    megapixels = np.prod([int(side) for side in size.split("x")]) / 1e6
    print(f"\nTiled (default tiles), {size} ({megapixels:.0f} MP), {label}, one run:\n")
    print("| precision | s per image | peak MB |")
    print("|---|---:|---:|")
    for precision, case in rows:
        print(f"| {precision} | {case['ms'] / 1000:.0f} | {case['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
