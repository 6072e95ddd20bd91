"""Hydra callback that keeps a new run out of an existing run's folder."""

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RefuseExistingRunDir(Callback):
    """Stop before Hydra writes anything into a run folder (or sweep folder) that is not empty.

    Hydra would otherwise overwrite the old run's `.hydra/config.yaml` and mix two runs' logs and
    checkpoints. Processes of a distributed run share one folder on purpose and are let through:
    the ranks > 0 that Lightning's DDP launcher starts (LOCAL_RANK), every process started by
    torchrun (WORLD_SIZE: ranks race to create the folder) and SLURM tasks > 0.
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
        path = Path(folder)
        if path.is_dir() and any(path.iterdir()):
            print(
                f"error: {key}={folder} already holds a run; choose another folder "
                "(to continue that run, start a new one with ckpt_path=.../checkpoints/last.ckpt)",
                file=sys.stderr,
            )
            sys.exit(1)
