"""Inference speed: the network in PyTorch eager fp32 (a) vs the exported model in onnxruntime (b).

    .venv/bin/python benchmarks/inference.py [--width 32 --blocks 5 --threads N --repeats 10]

Both run on the CPU, batch 1, with the same thread count and the same random weights (speed does
not depend on training); (b) is what `stylenet stylize` runs. Prints a Markdown table.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stylenet.export import INPUT_NAME, Clamped, to_onnx
from stylenet.network import TransformerNet

SIZES = ((512, 512), (1080, 1080))


def median_ms(step: Callable[[], object], repeats: int) -> float:
    """Median wall time of `step` in ms, after two warm-up calls (allocations, kernel choice)."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32, help="first-layer channels (32)")
    parser.add_argument("--blocks", type=int, default=5, help="residual blocks (5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    args = parser.parse_args()

    torch.manual_seed(0)
    network = TransformerNet(args.width, args.blocks).eval()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(to_onnx(network, opset=18).SerializeToString())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    eager = Clamped(network).eval()

    print(f"CPU: {cpu_name()}; {os.cpu_count()} logical cores; {args.threads} threads")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    print(f"TransformerNet width {args.width}, {args.blocks} residual blocks, batch 1, fp32\n")
    print("| image | (a) PyTorch eager, ms | (b) onnxruntime, ms | b/a |")
    print("|---|---:|---:|---:|")
    for height, width in SIZES:
        image = torch.rand(1, 3, height, width)
        array = image.numpy()
        with torch.inference_mode():
            a = median_ms(lambda image=image: eager(image), args.repeats)
        b = median_ms(lambda array=array: session.run(None, {INPUT_NAME: array}), args.repeats)
        print(f"| {width}x{height} | {a:.0f} | {b:.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
