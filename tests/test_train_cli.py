"""train.py as users run it: a subprocess with command-line overrides."""

import subprocess
import sys

import pytest

from helpers import ROOT, SMALL


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("style=nosuch", "error: unknown style 'nosuch'; choose from: candy, "),
        ("loss.style_weight=-1", "error: loss.style_weight must be a number >= 0, got -1"),
        ("data.image_size=16", "error: data.image_size must be an integer >= 32, got 16"),
        ("data.root=null", "error: data.root is missing"),
        ("data.root=/nonexistent", "error: data.root folder not found: /nonexistent"),
        ("loss.vgg_weights=/no/vgg.pth", "error: VGG16 weights file not found: /no/vgg.pth"),
        ("ckpt_path=/no/last.ckpt", "error: ckpt_path not found: /no/last.ckpt"),
    ],
)
def test_bad_config_is_one_line_on_stderr(tmp_path, override, message):
    result = run_train(override, f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_existing_run_folder_is_refused_and_left_untouched(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    config = run / ".hydra" / "config.yaml"
    config.write_text("a run the user owns\n")
    result = run_train(f"hydra.run.dir={run}", *SMALL)
    assert result.returncode != 0
    assert "already holds a run" in result.stderr
    assert config.read_text() == "a run the user owns\n"
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]


def test_sweep_makes_one_run_folder_per_value(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train("-m", "style=wave,the_scream", f"hydra.sweep.dir={sweep}", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["0_wave", "1_the_scream"]
    for run in runs:
        assert (sweep / run / "checkpoints" / "last.ckpt").is_file()
        assert f"run folder: {sweep / run}" in (sweep / run / "train.log").read_text()


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's own DDP launcher (gloo): both ranks train, rank 0 alone writes."""
    run = tmp_path / "run"
    result = run_train(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        f"hydra.run.dir={run}",
        *SMALL,
        "trainer.max_steps=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000003.png"]


def test_home_in_a_path_is_expanded(tmp_path, monkeypatch):
    """`data.root=~/photos` reaches train.py unexpanded: it expands it as a shell would."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photos").mkdir()  # exists but empty: the error names the expanded folder
    result = run_train("data.root=~/photos", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.stderr.strip() == f"error: data.root {tmp_path / 'photos'} has no images " + (
        "(.bmp, .jpeg, .jpg, .png, .webp)"
    )
