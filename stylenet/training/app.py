"""What the Hydra entry points (train.py, export.py, optimize.py) share: config resolvers, checks of
config values against the constructors they are for, and one-line errors for user mistakes
instead of Hydra's tracebacks."""

import contextlib
import difflib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePath
from typing import Any

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from stylenet.errors import StylenetError
from stylenet.training.paths import CONFIG_DIR, shared_data_dir


def choices(group: str) -> list[str]:
    """The options of config group `group` (configs/`group`/*.yaml), sorted."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


OmegaConf.register_new_resolver("stem", lambda path: Path(path).stem, replace=True)
OmegaConf.register_new_resolver("shared_data", lambda: str(shared_data_dir()), replace=True)
# A step count as a fraction of another: scheduler milestones that follow trainer.max_steps.
OmegaConf.register_new_resolver(
    "steps_at", lambda steps, fraction: int(steps * fraction), replace=True
)
# The run folder's name: the style's, or those of `styles` joined.
OmegaConf.register_new_resolver(
    "run_name",
    lambda styles, style: "+".join(Path(str(s)).stem for s in styles) if styles else style,
    replace=True,
)
# For help texts (configs/hydra/*_help.yaml): `${choices:style}` lists the bundled styles.
OmegaConf.register_new_resolver("choices", lambda group: ", ".join(choices(group)), replace=True)


def unknown_choice(args: list[str]) -> str | None:
    """One line for `group=option` arguments (sweeps too) naming a config that does not exist.

    Hydra would say it in a dozen lines; `style=` is the one users mistype most.
    """
    for arg in args:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if not sep or "." in key or group.startswith("hydra") or not (CONFIG_DIR / group).is_dir():
            continue
        for option in value.split(","):
            if option not in choices(group):
                extra = " (or style.image=PATH for any image)" if group == "style" else ""
                return (
                    f"unknown {group} '{option}'; choose from: {', '.join(choices(group))}{extra}"
                )
    return None


def expand_home(arg: str) -> str:
    """`key=~/path` -> `key=/home/me/path`: shells expand ~ only at the start of a word."""
    key, sep, value = arg.partition("=")
    if sep and (value == "~" or value.startswith("~/")):
        return f"{key}={Path(value).expanduser()}"
    return arg


def unknown_key(key: str, known: Iterable[str], otherwise: str = "") -> str:
    """'unknown key K; did you mean N?' with N the nearest of the `known` full keys, by the whole
    key or else by its last part (`lr` finds `optimizer.lr`); `otherwise` follows when none is near.
    """
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1)
    if not match:
        tails = {k.rsplit(".", 1)[-1]: k for k in reversed(known)}  # the first key with a tail wins
        match = [tails[t] for t in difflib.get_close_matches(key.rsplit(".", 1)[-1], tails, n=1)]
    return f"unknown key {key}" + (f"; did you mean {match[0]}?" if match else otherwise)


def config_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every key of `node` and below, as full dotted keys, without resolving any value; Hydra's
    own settings (`hydra.`) left out."""
    for key in node:
        full = f"{prefix}{key}"
        if full == "hydra":
            continue
        yield full
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from config_keys(child, f"{full}.")


def omegaconf_error(e: OmegaConfBaseException) -> str:
    """One line for an OmegaConf error; a key that is not in the config names the nearest one
    (Hydra's own message suggests adding the typo with +key=value)."""
    parent = getattr(e, "parent_node", None)
    if isinstance(e, ConfigAttributeError | ConfigKeyError) and e.full_key and parent is not None:
        return unknown_key(
            e.full_key,
            config_keys(parent._get_root()),
            f" (a key that is not in the config is added with +{e.full_key}=VALUE)",
        )
    return str(e).strip().splitlines()[0] + (f" (key: {e.full_key})" if e.full_key else "")


def user_error(e: BaseException | None) -> str | None:
    """The one-line message for a configuration or input mistake, None for a real bug."""
    while e is not None:  # Hydra wraps errors from constructors in InstantiationException
        if isinstance(e, StylenetError):
            return str(e)
        if isinstance(e, OmegaConfBaseException):
            return omegaconf_error(e)
        if isinstance(e, CompactHydraException) and e.__cause__ is None:  # e.g. a syntax error
            lines = [line for line in str(e).strip().splitlines() if not line.startswith("See ")]
            return "; ".join(lines[:2])
        e = e.__cause__
    return None


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Exit with `error: ...` on stderr (status 1) for a user's mistake (`user_error`), however
    Hydra wrapped it; a real bug keeps its traceback."""
    try:
        yield
    except Exception as e:
        if (message := user_error(e)) is None:
            raise
        sys.exit(f"error: {message}")


# What a value given on the command line can be, in words, by annotation.
KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def members(annotation: Any) -> list[Any]:
    """The members of a Union (Optional, X | Y), nested ones too; [annotation] for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in members(a)]
    return [annotation]


def accepts(annotation: Any, value: Any) -> bool:
    """Whether `value` (None, bool, int, float or str, as Hydra parses them) suits `annotation`;
    True for annotations this cannot judge (TypeVars, Any)."""
    return any(accepts_kind(kind, value) for kind in members(annotation))


def accepts_kind(kind: Any, value: Any) -> bool:
    """accepts() for one member of a Union."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if kind in (int, float, str):  # an int is a float too, and a number may name a file
        allowed = {int: int, float: (int, float), str: (str, int, float)}[kind]
        return isinstance(value, allowed) and not isinstance(value, bool)
    if kind is type(None):
        return value is None
    if kind is typing.Any or not isinstance(origin or kind, type):
        return True
    cls = origin or kind  # bool, Path (from a string), Iterable (a string is one), Accelerator...
    return isinstance(value, cls) or (isinstance(value, str) and issubclass(cls, PurePath))


def describe(annotation: Any) -> str:
    """What `annotation` accepts, in words: 'an integer or null', 'one of 32-true, ... or null'."""
    words, values = [], []
    for kind in members(annotation):
        if typing.get_origin(kind) is typing.Literal:
            values += [str(v) for v in typing.get_args(kind)]
        elif kind is type(None):
            words.append("null")
        else:
            words.append(KINDS.get(kind) or f"a {getattr(kind, '__name__', kind)}")
    if "a number" in words and "an integer" in words:
        words.remove("an integer")
    if values:
        words.insert(0, "one of " + ", ".join(dict.fromkeys(values)))
    return " or ".join(dict.fromkeys(words))


def target_of(path: str) -> Any:
    """What a `_target_` names, looked up through instantiate so that Hydra's target policy applies
    (hydra.utils.get_object alone skips it); None when that fails: instantiating the node says why.
    """
    try:
        return hydra.utils.instantiate({"_target_": "hydra.utils.get_object", "path": path})
    except Exception:
        return None


def check_call(target: Callable, node: DictConfig, prefix: str) -> None:
    """Raise StylenetError for a key of `node` that `target` does not take or a value of a type its
    annotation does not accept, named by its config key."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # an annotation that does not evaluate here
        hints = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in node:
        if key.startswith("_"):
            continue
        if key not in params and not takes_any:
            raise StylenetError(unknown_key(prefix + key, [prefix + p for p in params]))
        unset = OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key)
        if key not in hints or unset or OmegaConf.is_config(value := node[key]) or value is None:
            continue  # None: unset, which the constructor's own check words better
        if not accepts(hints[key], value):
            raise StylenetError(f"{prefix}{key} must be {describe(hints[key])}, got {value!r}")


def check_settings(cfg: DictConfig, prefix: str = "") -> None:
    """Check every node with a `_target_` against what its class or function takes (check_call).

    Values typed on the command line reach constructors untyped: `trainer.max_steps=abc` would
    fail deep inside Lightning with a TypeError naming neither the key nor what it wants.
    """
    for key in cfg:
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and f"{prefix}{key}" != "hydra":
            check_settings(child, f"{prefix}{key}.")
    if "_target_" in cfg and (target := target_of(cfg._target_)) is not None:
        check_call(target, cfg, prefix)


def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], None]], Callable[[], None]]:
    """Turn `task(cfg)` into a command-line entry point over configs/`config_name`.yaml.

    User mistakes (unknown config choice or key, StylenetError, bad config value) print one line
    `error: ...` on stderr and exit with status 1; real bugs keep their traceback.
    """

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        def run(cfg: DictConfig) -> None:
            with one_line_errors():
                task(cfg)

        def main() -> None:
            sys.argv[1:] = [expand_home(arg) for arg in sys.argv[1:]]
            if message := unknown_choice(sys.argv[1:]):
                sys.exit(f"error: {message}")
            # Hydra prints errors of its own (an unknown key, a Hydra callback's check) in several
            # lines unless HYDRA_FULL_ERROR=1, which hands them to this handler instead.
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")
            with one_line_errors():
                run()

        return main

    return decorate
