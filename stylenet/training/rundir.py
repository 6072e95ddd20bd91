"""Hydra callback that keeps a new run out of an existing run's folder."""

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def left_by_a_failed_start(path: Path) -> bool:
    """Whether `path` (relative to a run or sweep folder) is one of the files that a run stopped
    before its first training step leaves: Hydra's config (.hydra/), log (train.log) and sweep
    config (multirun.yaml), and what the loggers write when fit starts (csv/hparams.yaml and
    TensorBoard's event file; csv/metrics.csv comes with the first logged losses)."""
    return (
        ".hydra" in path.parts
        or "tensorboard" in path.parts
        or path.suffix == ".log"
        or path.name in ("multirun.yaml", "hparams.yaml")
    )


def run_file(folder: Path) -> Path | None:
    """A file that shows `folder` holds a run (or a user's files): a checkpoint, last.ckpt first,
    else the first file found that a failed start does not leave; None for a folder that is
    missing, empty or left by a failed start. Stops at the first file: `folder` may be large."""
    if not folder.is_dir():
        return None
    checkpoints = [*folder.glob("checkpoints/*.ckpt"), *folder.glob("*/checkpoints/*.ckpt")]
    if checkpoints:
        return min(checkpoints, key=lambda p: (p.name != "last.ckpt", p))
    files = (p for p in folder.rglob("*") if p.is_file())
    return next((p for p in files if not left_by_a_failed_start(p.relative_to(folder))), None)


class RefuseExistingRunDir(Callback):
    """Stop before Hydra writes anything into a run folder (or sweep folder) that holds a run.

    Hydra would otherwise overwrite the old run's `.hydra/config.yaml` and mix two runs' logs and
    checkpoints. A folder left by a run that failed before training (a bad setting, no VGG
    weights) holds nothing worth keeping: rerunning the same command into it must work. So does
    an empty one; any other file (a checkpoint, losses, samples, a user's own) stops the run.
    Processes of a distributed run share one folder on purpose and are let through: the ranks > 0
    that Lightning's DDP launcher starts (LOCAL_RANK), every process started by torchrun
    (WORLD_SIZE: ranks race to create the folder) and SLURM tasks > 0.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(folder: str, key: str) -> None:
        env = os.environ
        if (
            "WORLD_SIZE" in env
            or int(env.get("LOCAL_RANK", 0)) > 0
            or int(env.get("SLURM_PROCID", 0)) > 0
        ):
            return
        if (found := run_file(Path(folder))) is None:
            return
        if found.suffix == ".ckpt":
            message = (
                f"{key}={folder} already holds a run; choose another folder (to continue that "
                f"run, start a new one with ckpt_path={found})"
            )
        else:
            held = found.relative_to(folder)
            message = (
                f"{key}={folder} is not empty: it holds {held}, which no failed start leaves; "
                "choose another folder"
            )
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
