"""Load on `stylenet serve`: concurrent clients on loopback, for a bounded time.

    .venv/bin/python benchmarks/serve_load.py [--clients 8 --seconds 20 --workers 1 --queue 4
        --models DIR --style NAME --photo PATH --max-size 512]

Starts the server as users do (`stylenet serve`, in a subprocess, on a free loopback port), then
each of --clients threads posts --photo to /api/stylize again and again until --seconds have
passed; requests then in flight are finished. A client that gets 503 (busy) waits --backoff
seconds before its next request. Prints the machine and settings, requests/s (answered 200), p50
and p95 latency, counts by status (connection errors by exception name) and the server's
resident memory after start-up and at its peak (VmHWM).

The server must finish every request it accepts and refuse the rest with 503, in bounded memory:
the exit status is 1 if any answer was neither 200 nor 503. Needs the [serve] extra and a model:
a bundled style, or --models (exported .onnx files).
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from stylenet.training.paths import shared_data_dir

MAX_CLIENTS = 256
MAX_SECONDS = 600


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """`stylenet serve` on a free port, and its address once it is listening."""
    command = [sys.executable, "-c", "from stylenet.runtime.cli import main; main()", "serve"]
    command += ["--port", "0", "--workers", str(args.workers), "--queue", str(args.queue)]
    if args.models:
        command += ["--models", str(args.models)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for line in server.stdout:
        print(f"server: {line.rstrip()}")
        if match := re.match(r"(http://\S+)", line):
            return server, match.group(1)
    raise SystemExit(f"the server did not start (exit status {server.wait()})")


def memory_mb(pid: int, key: str) -> float:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024


def client(
    url: str, fields: dict, photo: bytes, stop_at: float, backoff: float, results: list
) -> None:
    """Post the photo until `stop_at`: (status or exception name, seconds) per request."""
    with httpx.Client(base_url=url, timeout=300) as http:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                files = {"image": ("photo.jpg", photo, "image/jpeg")}
                outcome = str(http.post("/api/stylize", files=files, data=fields).status_code)
            except httpx.HTTPError as e:
                outcome = type(e).__name__
            results.append((outcome, time.perf_counter() - started))  # list.append: atomic
            if outcome == "503":
                time.sleep(backoff)


def load(url: str, args: argparse.Namespace) -> tuple[list, float]:
    """Run the clients: every request's (outcome, seconds), and the wall time."""
    fields = {"style": args.style} if args.style else {}
    if args.max_size:
        fields["max_size"] = str(args.max_size)
    photo = args.photo.read_bytes()
    results: list = []
    started = time.monotonic()
    stop_at = started + args.seconds
    threads = [
        threading.Thread(target=client, args=(url, fields, photo, stop_at, args.backoff, results))
        for _ in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - started


def report(results: list, wall: float, rss: tuple[float, float], args: argparse.Namespace) -> bool:
    """Print the figures; whether every answer was 200 or 503."""
    counts = Counter(outcome for outcome, _ in results)
    done = sorted(seconds for outcome, seconds in results if outcome == "200")
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs")
    print(
        f"settings: --workers {args.workers} --queue {args.queue}, {args.clients} clients for "
        f"{args.seconds:g} s (503: wait {args.backoff:g} s), photo {args.photo.name}, "
        f"max_size {args.max_size or 'none'}, style {args.style or 'default'}"
    )
    print(f"answers: {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}")
    if done:
        p50, p95 = statistics.median(done), done[min(len(done) - 1, int(0.95 * len(done)))]
        print(
            f"stylized: {len(done) / wall:.2f} requests/s over {wall:.1f} s; "
            f"latency p50 {p50:.2f} s, p95 {p95:.2f} s"
        )
    print(f"server memory: {rss[0]:.0f} MB after start-up, peak {rss[1]:.0f} MB (VmHWM)")
    return set(counts) <= {"200", "503"}


def cpu_model() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    match = re.search(r"^Model name:\s+(.+)$", lscpu, re.M)
    return match.group(1).strip() if match else "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, choices=range(1, MAX_CLIENTS + 1))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=4)
    parser.add_argument("--models", type=Path, help="a folder of .onnx models for the server")
    parser.add_argument("--style", help="the style to ask for (default: the server's)")
    parser.add_argument("--photo", type=Path, default=shared_data_dir() / "content" / "amber.jpg")
    parser.add_argument("--max-size", type=int, help="the max_size field (default: none)")
    parser.add_argument("--backoff", type=float, default=0.1, help="seconds to wait after a 503")
    args = parser.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    server, url = start_server(args)
    try:
        started_mb = memory_mb(server.pid, "VmRSS")
        results, wall = load(url, args)
        peak_mb = memory_mb(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    if not report(results, wall, (started_mb, peak_mb), args):
        sys.exit(1)


if __name__ == "__main__":
    main()
