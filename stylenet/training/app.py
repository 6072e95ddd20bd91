"""What the Hydra entry points (train.py, export.py, optimize.py) share: config resolvers and
one-line errors for user mistakes instead of Hydra's tracebacks."""

import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stylenet.errors import StylenetError
from stylenet.training.paths import CONFIG_DIR, shared_data_dir

OmegaConf.register_new_resolver("stem", lambda path: Path(path).stem, replace=True)
OmegaConf.register_new_resolver("shared_data", lambda: str(shared_data_dir()), replace=True)


def unknown_choice(args: list[str]) -> str | None:
    """One line for `group=option` arguments (sweeps too) naming a config that does not exist.

    Hydra would say it in a dozen lines; `style=` is the one users mistype most.
    """
    for arg in args:
        key, sep, value = arg.partition("=")
        group = CONFIG_DIR / key.lstrip("+~")
        if not sep or "." in key or not group.is_dir():
            continue
        for option in value.split(","):
            if not (group / f"{option}.yaml").is_file():
                choices = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
                extra = " (or style.image=PATH for any image)" if key == "style" else ""
                return f"unknown {key} '{option}'; choose from: {choices}{extra}"
    return None


def expand_home(arg: str) -> str:
    """`key=~/path` -> `key=/home/me/path`: shells expand ~ only at the start of a word."""
    key, sep, value = arg.partition("=")
    if sep and (value == "~" or value.startswith("~/")):
        return f"{key}={Path(value).expanduser()}"
    return arg


def user_error(e: BaseException | None) -> str | None:
    """The one-line message for a configuration or input mistake, None for a real bug."""
    while e is not None:  # Hydra wraps errors from constructors in InstantiationException
        if isinstance(e, StylenetError):
            return str(e)
        if isinstance(e, OmegaConfBaseException):
            return str(e).strip().splitlines()[0] + (f" (key: {e.full_key})" if e.full_key else "")
        e = e.__cause__
    return None


def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], None]], Callable[[], None]]:
    """Turn `task(cfg)` into a command-line entry point over configs/`config_name`.yaml.

    User mistakes (unknown config choice, StylenetError, bad config value) print one line
    `error: ...` on stderr and exit with status 1; real bugs keep their traceback.
    """

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        def run(cfg: DictConfig) -> None:
            try:
                task(cfg)
            except Exception as e:
                message = user_error(e)
                if message is None:
                    raise
                sys.exit(f"error: {message}")

        def main() -> None:
            sys.argv[1:] = [expand_home(arg) for arg in sys.argv[1:]]
            if message := unknown_choice(sys.argv[1:]):
                sys.exit(f"error: {message}")
            run()

        return main

    return decorate
