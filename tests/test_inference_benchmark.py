"""benchmarks/inference.py: its arguments."""

import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize("tiled", ["0", "6000", "6000x", "x4000", "6000x4000x3"])
def test_a_bad_tiled_size_is_one_line(tiled: str):
    """Refused before any model is exported, in one line (it was an IndexError traceback)."""
    result = subprocess.run(
        [sys.executable, "benchmarks/inference.py", "--tiled", tiled],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--tiled takes WIDTHxHEIGHT in pixels" in result.stderr
    assert "Traceback" not in result.stderr
