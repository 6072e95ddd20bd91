import subprocess
import sys

import pytest

# Forward and backward passes of a small convolution net on 2x16x256x256 (8 MB activations), as a
# training step allocates and frees them; prints the page faults and the peak RSS over the repeats.
SCRIPT = """
import resource, sys, torch
from stylenet.training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 16, 3, padding=1)
)
x = torch.randn(2, 16, 256, 256)
for _ in range(3):  # warm-up: the first steps grow the heap to its working size
    net(x).square().mean().backward()
usage = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(10):
    net(x).square().mean().backward()
after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_minflt - usage.ru_minflt, after.ru_maxrss - usage.ru_maxrss)
"""


def faults_and_growth(mode: str) -> tuple[int, int]:
    """Page faults, and peak-RSS growth in KB, of 10 training-like steps after the first."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    faults, growth = map(int, out.stdout.split())
    return faults, growth


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    default_faults, _ = faults_and_growth("default")
    kept_faults, kept_growth = faults_and_growth("keep")
    assert default_faults > 10 * 2048  # glibc unmaps each big block on free: 8 MB faulted per step
    # keep_freed_memory() makes the steps reuse the same pages: a few 8 MB blocks faulted in once
    # more (heap layout), where glibc's default faults in every step's (measured 10x and more)...
    assert kept_faults < default_faults // 4
    assert kept_growth < 10 * 8 * 1024  # ...without the heap growing by a block every step
