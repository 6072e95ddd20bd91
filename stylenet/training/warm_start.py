"""Warm starts: a new painting trained from another one's network (`init_from=`).

`init_from` takes a checkpoint file or the name of a bundled style. The runtime ships each
bundled style as ONNX, whose kernels are derived from the trained weights (export_graph) and do
not turn back into them, so each bundled style also ships its training checkpoint, slimmed to the
network and the config (no optimizer state: a fifth of the size), in `BUNDLED_DIR`. When a style
ships:  python -m stylenet.training.warm_start CKPT  (writes BUNDLED_DIR/<style>.ckpt).

With `trainable=norms` only the instance norms' scales and shifts train, the convolutions stay
the parent's: Dumoulin, Shlens and Kudlur 2017 ("A Learned Representation for Artistic Style")
learn a new style that way on a network trained for others.
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylenet.errors import StylenetError
from stylenet.runtime.images import write_atomically

if TYPE_CHECKING:
    from stylenet.training.export import Checkpoint
    from stylenet.training.network import TransformerNet

BUNDLED_DIR = Path(__file__).parent / "bundled"
TRAINABLE = ("all", "norms")


def bundled_names() -> list[str]:
    """The bundled styles a warm start can name."""
    return sorted(path.stem for path in BUNDLED_DIR.glob("*.ckpt"))


def parent_path(init_from: str) -> Path:
    """The checkpoint that `init_from` names: a file, else a bundled style's."""
    if Path(init_from).expanduser().is_file():
        return Path(init_from).expanduser()
    if init_from in bundled_names():
        return BUNDLED_DIR / f"{init_from}.ckpt"
    raise StylenetError(
        f"init_from {init_from}: neither a checkpoint file nor a bundled style "
        f"({', '.join(bundled_names())})"
    )


def parent_weights(parent: "Checkpoint", styles: int) -> dict[str, Any]:
    """The parent's weights for a network of `styles` styles. A one-style network started from
    a network of several gets their average scales and shifts (the only [styles, channels]
    tensors): a start between its paintings, none of them favoured. A network of several started
    from a one-style one starts each style from the parent's."""
    weights = parent.network.state_dict()
    norms = parent.network.style_parameter_names()
    if parent.network.styles > 1 and styles == 1:
        return {key: value.mean(0) if key in norms else value for key, value in weights.items()}
    if parent.network.styles == 1 and styles > 1:
        return {
            key: value.expand(styles, -1) if key in norms else value
            for key, value in weights.items()
        }
    return weights


def train_only_norms(network: "TransformerNet") -> None:
    """Freeze everything but the instance norms' scales and shifts."""
    names = network.style_parameter_names()
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name in names)


def record(parent: "Checkpoint", init_from: str) -> dict[str, Any]:
    """What the parent is, for the model card: its painting, steps, training time and command,
    and its own warm start, so a card tells the whole training a model had."""
    style = parent.config.get("style") or {}
    return {
        "file": Path(init_from).name,
        "painting": style.get("painting") or style.get("name") or "unknown",
        "steps": parent.steps,
        "seconds": parent.seconds,
        "command": parent.config.get("command") or "unknown",
        "warm_start": parent.config.get("warm_start"),
    }


def slim(checkpoint: Path, output: Path | None = None, overwrite: bool = False) -> Path:
    """Write `checkpoint`'s network weights, config (without this machine's paths), steps and
    training time, in the form `export.load_checkpoint` reads, to `output` (default: the bundled
    file of its style, BUNDLED_DIR/<style name>.ckpt); returns the path written."""
    import torch

    from stylenet.training.export import load_checkpoint, portable

    config = load_checkpoint(checkpoint).config  # refuses what is not a training checkpoint
    output = output or BUNDLED_DIR / f"{config['style']['name']}.ckpt"
    full = torch.load(checkpoint, map_location="cpu", weights_only=False)
    kept = {
        "state_dict": full["state_dict"],
        "hyper_parameters": {"config": portable(config)},
        "global_step": full.get("global_step", 0),
        "callbacks": {"TrainingClock": (full.get("callbacks") or {}).get("TrainingClock", {})},
    }
    write_atomically(output, lambda tmp: torch.save(kept, tmp), overwrite)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stylenet.training.warm_start",
        description="Ship a bundled style's warm-start weights: its checkpoint, slimmed.",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--output", type=Path, help="default: BUNDLED_DIR/<style name>.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        print(slim(args.checkpoint, args.output, args.overwrite))
    except StylenetError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
