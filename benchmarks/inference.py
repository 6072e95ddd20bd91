"""Inference speed and memory of exported models in onnxruntime, fp32 and int8, whole and tiled.

    .venv/bin/python benchmarks/inference.py [--width 32 16 16 8 --blocks 5 5 3 3]
        [--threads N --repeats 5 --tiled 6000x4000]

For each network (width and residual blocks, paired), random weights (speed does not depend on
training) are exported as `export.py` does and quantized as `stylenet quantize` does (calibrated
on ../shared/data/photos/train). Each case then runs in a fresh process, through the runtime users
get (`Stylizer`), so that its peak resident memory is its own: batch 1 at 512x512 and 1080x1080
run whole, the tiled size in the default tiles. Prints Markdown tables.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = ((512, 512), (1080, 1080))
DATA_DIR = Path(
    os.environ.get("STYLENET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_int8")


def measure(model: Path, width: int, height: int, threads: int, repeats: int, tiled: bool) -> dict:
    """ms per image (median of `repeats` after one warm-up) and this process's peak RSS in MB."""
    from stylenet.runtime import Stylizer  # torch-free, as users run it

    stylizer = Stylizer(model, threads=threads, tile=None if tiled else 0)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    times = []
    for _ in range(repeats + (0 if tiled else 1)):  # a tiled image is warm-up enough for itself
        start = time.perf_counter()
        stylizer.stylize(image)
        times.append((time.perf_counter() - start) * 1000)
    return {"ms": statistics.median(times[-repeats:]), "rss_mb": peak_rss_mb()}


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
    command = [sys.executable, __file__, "--measure", str(model), "--size", f"{size[1]}x{size[0]}"]
    command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    result = subprocess.run([*command, *(["--tile"] if tiled else [])], capture_output=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr.decode()}")
    return json.loads(result.stdout)


def gflop(width: int, blocks: int, height: int, image_width: int) -> float:
    """Convolution GFLOP (2 per multiply-add) of one image, counted on shapes only."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stylenet.network import TransformerNet

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        TransformerNet(width, blocks)(torch.empty(1, 3, height, image_width))
    return counter.get_total_flops() / 1e9


def export_models(width: int, blocks: int, folder: Path) -> dict[str, Path]:
    """fp32 and int8 models of a random-weight network, as export.py and quantize make them."""
    import onnx
    import torch

    from stylenet.export import to_onnx
    from stylenet.network import TransformerNet
    from stylenet.quantize import quantize_model

    torch.manual_seed(0)
    network = TransformerNet(width, blocks).eval()
    model = to_onnx(network, opset=18)
    radius = str(network.receptive_radius())
    onnx.helper.set_model_props(model, {"receptive_radius": radius})  # what tiling reads
    fp32 = folder / f"w{width}b{blocks}.onnx"
    onnx.save(model, fp32)
    int8 = folder / f"w{width}b{blocks}-int8.onnx"
    quantize_model(fp32, DATA_DIR / "photos" / "train", int8, count=8)
    return {"fp32": fp32, "int8": int8}


def cpu() -> str:
    """The CPU model and the vector extensions that matter here, from /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor() or platform.machine()
    text = cpuinfo.read_text()
    name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line)
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
    return f"{name} ({', '.join(f for f in FLAGS if f in flags) or 'no AVX2'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, nargs="+", default=[32, 16, 16, 8])
    parser.add_argument("--blocks", type=int, nargs="+", default=[5, 5, 3, 3])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per whole-image case")
    parser.add_argument("--tiled", default="6000x4000", help="WxH run tiled (full width only)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one case, in a child
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--tile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        width, height = map(int, args.size.split("x"))
        repeats = 1 if args.tile else args.repeats
        print(json.dumps(measure(args.measure, width, height, args.threads, repeats, args.tile)))
        return
    if len(args.width) != len(args.blocks):
        parser.error("--width and --blocks pair up: give as many of each")

    import onnxruntime as ort

    print(f"CPU: {cpu()}; {os.cpu_count()} logical cores; onnxruntime {ort.__version__}")
    print(f"{args.threads} threads, batch 1, random weights, median of {args.repeats} runs\n")
    header = "| network | precision | " + " | ".join(
        f"{w}x{h} GFLOP | {w}x{h} ms | {w}x{h} peak MB" for h, w in SIZES
    )
    print(header + " |")
    print("|---|---|" + "---:|" * 3 * len(SIZES))
    tiled_size = tuple(map(int, args.tiled.split("x")))[::-1]
    tiled_rows = []
    with tempfile.TemporaryDirectory() as folder:
        for width, blocks in zip(args.width, args.blocks, strict=True):
            models = export_models(width, blocks, Path(folder))
            flops = [gflop(width, blocks, *size) for size in SIZES]
            for precision, model in models.items():
                cells = []
                for size, g in zip(SIZES, flops, strict=True):
                    case = run_case(model, size, args, tiled=False)
                    cells.append(f"{g:.0f} | {case['ms']:.0f} | {case['rss_mb']:.0f}")
                print(f"| {width} x {blocks} | {precision} | {' | '.join(cells)} |", flush=True)
                if (width, blocks) == (args.width[0], args.blocks[0]):
                    tiled_rows.append((precision, run_case(model, tiled_size, args, tiled=True)))
    print(
        f"\nTiled (default tiles), {args.tiled} ({np.prod(tiled_size) / 1e6:.0f} MP), "
        f"{args.width[0]} x {args.blocks[0]}, one run:\n"
    )
    print("| precision | s per image | peak MB |")
    print("|---|---:|---:|")
    for precision, case in tiled_rows:
        print(f"| {precision} | {case['ms'] / 1000:.0f} | {case['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
