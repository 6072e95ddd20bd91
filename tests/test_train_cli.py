"""train.py as users run it: a subprocess with command-line overrides."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, SMALL


def run_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def run_train(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, **env)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


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
        # Typos name the nearest key, by its whole name or its last part.
        (
            "trainer.max_step=10",
            "error: unknown key trainer.max_step; did you mean trainer.max_steps?",
        ),
        ("lr=0.1", "error: unknown key lr; did you mean optimizer.lr?"),
        (
            "+trainer.max_step=10",  # added with +, but Lightning's Trainer has no such argument
            "error: unknown key trainer.max_step; did you mean trainer.max_steps?",
        ),
        ("trainer.max_steps=abc", "error: trainer.max_steps must be an integer, got 'abc'"),
        ("data.batch_size=2.5", "error: data.batch_size must be an integer, got 2.5"),
        ("trainer.precision=bf17", "error: trainer.precision must be one of 64, 32, 16, "),
        ("style.image={tmp}/notes.txt", "error: cannot read style.image {tmp}/notes.txt: "),
        ("foo", "error: Error parsing override 'foo'; missing EQUAL"),
    ],
)
def test_bad_config_is_one_line_on_stderr_and_writes_nothing(tmp_path, override, message):
    """Every check runs before Hydra writes the run folder (.hydra/, train.log)."""
    (tmp_path / "notes.txt").write_text("not a painting\n")
    override, message = (s.replace("{tmp}", str(tmp_path)) for s in (override, message))
    result = run_train("trainer.max_steps=1", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_rerun_after_a_failed_start_works(tmp_path):
    """No VGG weights: nothing is written. A folder that holds only what a start that failed later
    leaves (Hydra's config and log, the loggers' headers) takes the same command again."""
    run = tmp_path / "run"
    result = run_train(f"hydra.run.dir={run}", *SMALL, STYLENET_VGG_WEIGHTS="/nonexistent")
    assert_one_line_error(result, "error: VGG16 weights file not found: /nonexistent")
    assert not run.exists()

    for leftover in (".hydra/config.yaml", "train.log", "csv/hparams.yaml"):
        (run / leftover).parent.mkdir(parents=True, exist_ok=True)
        (run / leftover).write_text("from a failed start\n")
    result = run_train(f"hydra.run.dir={run}", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_folder_with_a_run_is_refused_and_left_untouched(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("a run the user owns\n")
    (run / "train.log").write_text("its log\n")
    result = run_train(f"hydra.run.dir={run}", *SMALL)
    assert_one_line_error(
        result,
        f"error: hydra.run.dir={run} already holds a run; choose another folder (to continue "
        f"that run, start a new one with ckpt_path={run / 'checkpoints' / 'last.ckpt'})",
    )
    assert (run / "checkpoints" / "last.ckpt").read_text() == "a run the user owns\n"
    assert (run / "train.log").read_text() == "its log\n"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "train.log"]


def test_folder_with_other_files_is_refused(tmp_path):
    """A run without checkpoints yet (its losses) or a user's own files: not a failed start."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step,train/total\n")
    result = run_train(f"hydra.run.dir={tmp_path}", *SMALL)
    assert_one_line_error(
        result, f"error: hydra.run.dir={tmp_path} is not empty: it holds csv/metrics.csv"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv"]


@pytest.mark.parametrize(
    ("script", "says", "keys", "not_listed"),
    [
        (
            "train.py",
            "train a network that paints any photo in one style",
            ["style: candy,", "trainer: cpu_bf16,", "trainer.max_steps", "data.root", "ckpt_path"],
            [],
        ),
        (
            "export.py",
            "turn a checkpoint written by train.py into an ONNX",
            ["ckpt ", "output ", "overwrite=true", "opset ", "tolerance ", "parity_sizes "],
            ["trainer:", "style:", "data.root"],
        ),
        (
            "optimize.py",
            "stylize one photo by optimising its pixels",
            ["Styles (style=NAME): candy,", "content ", "steps ", "method ", "loss.style_weight"],
            ["trainer:", "data.root"],
        ),
    ],
)
def test_help_says_what_the_command_does_and_lists_its_own_settings(script, says, keys, not_listed):
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert says in text and "Examples:" in text and f"python {script} " in text
    for key in keys:
        assert key in text, key
    for key in not_listed:
        assert key not in text, key
    assert "${" not in text and "Hydra (https://hydra.cc)" not in text  # no unresolved noise


def test_help_shows_the_values_of_this_command_line():
    text = run_train("--help", "style=wave", "trainer.max_steps=77").stdout
    assert "/wave.jpg" in text and "trainer.max_steps    steps to train" in text
    assert "a CPU step takes seconds: 77" in text


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
    assert result.stderr.strip() == f"error: data.root {tmp_path / 'photos'} has no images"
