"""Checkpoint -> ONNX model for the torch-free runtime, checked against PyTorch before writing.

The exported graph is the network followed by a clamp to [0, 1], so every consumer of the file
(stylenet.runtime, a web service calling onnxruntime directly) gets valid pixels. Input "image"
and output "stylized" are float32 NCHW RGB in [0, 1] with dynamic batch, height and width.

For tiled inference and video the graph also outputs the statistics every instance norm
measured on its input ("norm_stats", [batch, K]), and has optional inputs: "given_norm_stats"
([1, K]) to normalise with where the boolean "use_given_norm_stats" is true (tiles, a clip's
frames), and the boolean "pool_norm_stats" to pool the statistics over the batch (crops of one
image). They are of ONNX type optional(tensor), which a caller may leave out, and the graph holds
their defaults (zeros, false, false): feeding only "image" runs the plain network
(`optional_inputs`). The IR version written is the lowest the opset needs (8 for opset 18), which
older runtimes load too.

A network of several styles has one more input, "style_weights" ([1, styles], float32, each
a weight of the style of that index in the metadata's "style_names"; a one-hot row is one style,
others blend them, Dumoulin et al. 2017), which a caller must give.

With `plain`, the file is the plain form instead (`stylenet.runtime.plain`): "image" in,
"stylized" out, nothing else, for runtimes that cannot load the statistics interface (OpenCV);
with a `size`, for one image of that size only, its shape arithmetic folded (what OpenCV 4 loads).
"""

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from stylenet.errors import StylenetError
from stylenet.runtime.images import write_atomically
from stylenet.runtime.plain import fixed_size, plain_graph
from stylenet.runtime.stylizer import (
    GIVEN_STATS_NAME,
    INPUT_NAME,
    OPTIONAL_INPUTS,
    OUTPUT_NAME,
    POOL_STATS_NAME,
    STATS_NAME,
    STYLE_WEIGHTS_NAME,
    USE_GIVEN_NAME,
)
from stylenet.training.app import hydra_app
from stylenet.training.callbacks import duration
from stylenet.training.export_graph import ExportForm
from stylenet.training.network import TransformerNet

CONVENTION = (
    f"input '{INPUT_NAME}', output '{OUTPUT_NAME}': float32 NCHW RGB in [0, 1], "
    "any batch, height and width; output clamped to [0, 1], same size as the input; "
    f"output '{STATS_NAME}' [batch, K]: each instance norm's channel means then variances, "
    "measured on its input; "
    f"optional inputs '{GIVEN_STATS_NAME}' [1, K] and '{USE_GIVEN_NAME}' (bool): normalise with "
    f"the given statistics (tiles of one image); '{POOL_STATS_NAME}' (bool): pool the "
    "statistics over the batch (crops of one image)"
)
# (batch, height, width) compared before writing: odd sizes exercise the padding and cropping.
PARITY_SIZES = ((1, 5, 7), (2, 33, 65), (1, 257, 191), (1, 256, 256))
# Constant folding up to this many elements: every kernel that the export form derives from the
# trained weights (`export_graph.ExportForm`) is then an initializer, which onnxruntime's blocked
# convolutions and int8 quantisation both need; the exporter's default stops at 8192 inputs.
FOLD_LIMIT = 2**24
log = logging.getLogger(__name__)


class Clamped(nn.Module):
    """The network's pixels as exported: clamped to [0, 1] (training sees them unclamped)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).clamp(0.0, 1.0)


class Exported(nn.Module):
    """`Clamped`, with the instance-norm statistics out and in (`TransformerNet.forward_shared`),
    and for several styles their weights in."""

    def __init__(self, network: TransformerNet, compute: ExportForm | None = None):
        super().__init__()
        self.network = network
        self.compute = compute  # how the function is computed, when not by `network` itself

    def forward(
        self,
        image: torch.Tensor,
        given: torch.Tensor,
        use_given: torch.Tensor,
        pool: torch.Tensor,
        style_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.network.styled(style_weights):
            stylized, stats = self.network.forward_shared(
                image, given, use_given, pool, compute=self.compute
            )
        return stylized.clamp(0.0, 1.0), stats


def plain_inputs(network: TransformerNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The optional inputs' defaults: no statistics given, none pooled."""
    stats = torch.zeros(1, 2 * sum(network.norm_channels()))
    return stats, torch.tensor(False), torch.tensor(False)  # two: export merges repeats


def style_inputs(network: TransformerNet) -> tuple[torch.Tensor, ...]:
    """The style weights input of a network of several styles (an even blend as the example),
    none for one style."""
    return (torch.full((1, network.styles), 1 / network.styles),) if network.styles > 1 else ()


@dataclass
class Checkpoint:
    """What export needs from a training checkpoint."""

    network: TransformerNet
    config: dict[str, Any]
    steps: int
    seconds: dict[str, float]  # training wall time per machine (callbacks.TrainingClock)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the trained network from a Lightning checkpoint; StylenetError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise StylenetError(f"checkpoint not found: {path}")
    try:
        # Lightning checkpoints hold plain Python objects besides tensors: not weights_only.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises pickle, zip and runtime errors alike
        raise StylenetError(f"not a PyTorch checkpoint: {path} ({_first_line(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise StylenetError(f"not a Lightning checkpoint (no state_dict): {path}")
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict) or "network" not in config:
        raise StylenetError(f"checkpoint has no training config (hyper_parameters.config): {path}")
    weights = {
        key.removeprefix("network."): value
        for key, value in ckpt["state_dict"].items()
        if key.startswith("network.")
    }
    try:
        network = instantiate(config["network"])
        network.load_state_dict(weights)
    except Exception as e:  # a config or weights that do not fit: say which, not a traceback
        raise StylenetError(f"cannot rebuild the network from {path}: {_first_line(e)}") from None
    if not isinstance(network, TransformerNet):
        raise StylenetError(f"{path}: export takes a TransformerNet, not {type(network).__name__}")
    clock = (ckpt.get("callbacks") or {}).get("TrainingClock") or {}
    return Checkpoint(
        network.eval(), config, int(ckpt.get("global_step", 0)), clock.get("seconds", {})
    )


def to_onnx(network: TransformerNet, opset: int) -> onnx.ModelProto:
    """Export `Exported(ExportForm(network))`, batch, height and width dynamic (torch.export).

    The example input has odd sizes and a batch of 2 so that no size is specialised; the legacy
    TorchScript exporter cannot be used: it bakes the padding for the example size into the graph.
    """
    dims = {
        axis: torch.export.Dim(name) for axis, name in ((0, "batch"), (2, "height"), (3, "width"))
    }
    defaults = plain_inputs(network)
    styles = style_inputs(network)
    copied = copy.deepcopy(network)  # the caller's keeps its mode
    program = torch.onnx.export(
        Exported(copied, ExportForm(copied)).eval(),
        (torch.rand(2, 3, 37, 53), *defaults, *styles),
        dynamo=True,
        input_names=[INPUT_NAME, *OPTIONAL_INPUTS, *[STYLE_WEIGHTS_NAME] * len(styles)],
        output_names=[OUTPUT_NAME, STATS_NAME],
        dynamic_shapes={
            "image": dims,
            "given": None,
            "use_given": None,
            "pool": None,
            **({"style_weights": None} if styles else {}),
        },
        opset_version=opset,
        verbose=False,
    )
    onnxscript.optimizer.fold_constants(
        program.model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT
    )
    model = program.model_proto
    # The exporter names output dims by formulas (Min(height, 4*(...))) that equal the input's.
    output_dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(output_dims, ("batch", "", "height", "width"), strict=True):
        if name:
            dim.dim_param = name
    # The exporter's debugging notes (stack traces with local paths) are 60% of a small model.
    for node in model.graph.node:
        del node.metadata_props[:]
    named = zip(OPTIONAL_INPUTS, defaults, strict=True)
    optional_inputs(model.graph, {name: default.numpy() for name, default in named})
    # Optional types need IR 8, which opset 18 needs too; the exporter writes its own (10), which
    # onnxruntime <= 1.17 refuses.
    model.ir_version = onnx.helper.find_min_ir_version_for(model.opset_import)
    return model


def optional_inputs(graph: onnx.GraphProto, defaults: dict[str, np.ndarray]) -> None:
    """Make the named graph inputs optional, with their `defaults` inside the graph.

    Each becomes an input of ONNX type optional(tensor), which a caller may leave out, and the
    graph starts with OptionalHasElement(x) and If(x given: OptionalGetElement(x), else: the
    default), whose output the graph reads instead of x. Initializers named like inputs would be
    defaults too, but onnxruntime warns about each in every session and OpenCV refuses them.
    """
    switches = []
    for value in graph.input:
        if value.name in defaults:
            switches += _optional(graph, value, defaults[value.name])
    nodes = [*switches, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def _optional(
    graph: onnx.GraphProto, value: onnx.ValueInfoProto, default: np.ndarray
) -> list[onnx.NodeProto]:
    """Make input `value` optional; returns the nodes that choose it or `default`."""
    name, tensor = value.name, onnx.TypeProto(tensor_type=value.type.tensor_type)
    value.type.CopyFrom(onnx.helper.make_optional_type_proto(tensor))
    given, chosen = f"{name}_given", f"{name}_or_default"
    for node in graph.node:
        node.input[:] = [chosen if x == name else x for x in node.input]
    constant = onnx.numpy_helper.from_array(default)
    branches = {
        "then_branch": onnx.helper.make_node("OptionalGetElement", [name], [f"{name}_value"]),
        "else_branch": onnx.helper.make_node("Constant", [], [f"{name}_default"], value=constant),
    }
    graphs = {
        key: onnx.helper.make_graph(
            [node], f"{name}_{key}", [], [onnx.helper.make_value_info(node.output[0], tensor)]
        )
        for key, node in branches.items()
    }
    return [
        onnx.helper.make_node("OptionalHasElement", [name], [given]),
        onnx.helper.make_node("If", [given], [chosen], **graphs),
    ]


def max_difference(
    network: TransformerNet, model: onnx.ModelProto, sizes: Sequence[tuple[int, int, int]]
) -> float:
    """Largest |PyTorch - onnxruntime| over random inputs of the given (batch, height, width).

    Each size runs plain and, unless `model` is a plain form (no statistics interface), two more
    ways: as a tile, with the statistics of another image that each framework measured itself (so
    that wrong statistics show as wrong pixels); and pooled. A network of several styles runs
    each way as its last style alone and as an uneven blend of all.
    """
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    exported = Exported(network).eval()
    generator = torch.Generator().manual_seed(0)
    zeros, no, _ = plain_inputs(network)
    count = network.styles
    blends = [torch.eye(count)[-1:], torch.linspace(1, 2, count)[None] / (1.5 * count)]
    worst = 0.0
    for weights in blends if count > 1 else [None]:
        style = (weights,) if weights is not None else ()
        style_feed = {STYLE_WEIGHTS_NAME: weights.numpy()} if weights is not None else {}
        ways: list[tuple[tuple[torch.Tensor, ...], dict[str, np.ndarray]]] = [((zeros, no, no), {})]
        if STATS_NAME in [output.name for output in session.get_outputs()]:
            other = torch.rand(1, 3, 48, 64, generator=generator)
            with torch.no_grad():
                torch_stats = exported(other, zeros, no, no, *style)[1]
            (ort_stats,) = session.run([STATS_NAME], {INPUT_NAME: other.numpy(), **style_feed})
            yes = torch.tensor(True)
            ways += [
                (
                    (torch_stats, yes, no),
                    {GIVEN_STATS_NAME: ort_stats, USE_GIVEN_NAME: yes.numpy()},
                ),
                ((zeros, no, yes), {POOL_STATS_NAME: yes.numpy()}),
            ]
        for batch, height, width in sizes:
            image = torch.rand(batch, 3, height, width, generator=generator)
            for torch_inputs, ort_inputs in ways:
                with torch.no_grad():
                    expected = exported(image, *torch_inputs, *style)[0].numpy()
                feeds = {INPUT_NAME: image.numpy(), **ort_inputs, **style_feed}
                (actual,) = session.run([OUTPUT_NAME], feeds)
                if actual.shape != expected.shape:
                    raise StylenetError(f"exported model gives {actual.shape} for {expected.shape}")
                worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def metadata(checkpoint: Checkpoint) -> dict[str, str]:
    """The model's own record (ONNX metadata_props): what it is, its training, how to call it.

    The `style_*` and `training_*` keys are the model card (`stylenet info`, `stylenet styles`);
    no absolute path of the training machine is recorded.
    """
    config = checkpoint.config
    if config.get("styles"):  # several
        cards = [style_card(style) for style in config["styles"]]
        names = [card["name"] for card in cards]
        styles = {
            "style_name": "+".join(names),
            "style_names": json.dumps(names),
            "style_cards": json.dumps(cards),
        }
    else:
        styles = {f"style_{key}": value for key, value in style_card(config.get("style")).items()}
    return {
        "stylenet_version": _version(),
        **styles,
        "training_command": str(config.get("command") or "unknown"),
        "training_steps": str(checkpoint.steps),
        "training_image_size": str((config.get("data") or {}).get("image_size", "unknown")),
        "training_time": training_time(checkpoint.seconds),
        **(
            {"training_warm_start": warm_start(config["warm_start"])}
            if config.get("warm_start")
            else {}
        ),
        "training_config": json.dumps(portable(config), sort_keys=True, default=str),
        **network_metadata(checkpoint.network),
        "convention": CONVENTION,
    }


def style_card(style: dict[str, Any] | None) -> dict[str, str]:
    """A style's card from its run config: name, painting, artist, year, licence, the image's
    file name and checksum."""
    style = style or {}
    image = style.get("image")
    name = str(style.get("name") or (Path(image).stem if image else "unknown"))
    return {
        "name": name,
        "painting": str(style.get("painting") or name),
        **{key: str(style.get(key) or "unknown") for key in ("artist", "year", "licence")},
        "image": Path(image).name if image else "unknown",
        "image_sha256": style.get("sha256") or _sha256(image),
    }


def warm_start(record: dict[str, Any]) -> str:
    """The network a run started from (warm_start.record), and what that one started from:
    "The Starry Night, 1000 steps, 2 h on <CPU> (1 thread): python train.py ..."."""
    line = (
        f"{record['painting']}, {record['steps']} steps, {training_time(record['seconds'])}: "
        f"{record['command']}"
    )
    return (
        f"{line}; that from {warm_start(record['warm_start'])}"
        if record.get("warm_start")
        else line
    )


def training_time(seconds: dict[str, float]) -> str:
    """ "14 h on NVIDIA H200; 25 min on <CPU> (2 threads)", or "unknown"."""
    if not seconds:
        return "unknown"
    return "; ".join(f"{duration(s)} on {machine}" for machine, s in seconds.items())


def portable(value: Any) -> Any:
    """`value` (a config) with every absolute path cut to its last part: what a shared model
    says about its training without the training machine's folders."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items() if key != "paths"}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name
    return value


def network_metadata(network: TransformerNet) -> dict[str, str]:
    """The network's shape, and the grid and overlap that tiled inference reads."""
    return {
        "network": type(network).__name__,
        "network_width": str(getattr(network, "width", "unknown")),
        "network_num_res_blocks": str(getattr(network, "num_res_blocks", "unknown")),
        "network_stages": str(getattr(network, "stages", "unknown")),
        "downsample": str(network.downsample),
        "receptive_radius": str(network.receptive_radius()),
    }


@dataclass
class ExportReport:
    """What `export_checkpoint` did, for the log line."""

    output: Path
    max_difference: float
    metadata: dict[str, str]


def export_checkpoint(
    ckpt: str | Path,
    output: str | Path,
    overwrite: bool = False,
    opset: int = 18,
    tolerance: float = 1e-3,
    sizes: Sequence[tuple[int, int, int]] = PARITY_SIZES,
    plain: bool = False,
    size: Sequence[int] | None = None,
) -> ExportReport:
    """Checkpoint -> ONNX file at `output`, written only if onnxruntime matches PyTorch.

    `tolerance` bounds the max absolute difference on [0, 1] pixels (1e-3 is a quarter of an
    8-bit level); `sizes` are the (batch, height, width) checked, odd ones included. `plain`
    writes the plain form (`stylenet.runtime.plain`), checked again at `sizes`; with `size`
    (height, width), for one image of that size, checked at that size.
    """
    output = Path(output)
    fixed = fixed_size(size)
    if fixed and not plain:
        raise StylenetError("size= is for plain=true only: the full model takes any size")
    if output.exists() and not overwrite:
        raise StylenetError(f"{output} exists (overwrite=true to replace it)")
    checkpoint = load_checkpoint(ckpt)
    if plain and checkpoint.network.styles > 1:
        raise StylenetError(
            f"{ckpt} holds {checkpoint.network.styles} styles: export the model, then write the "
            "plain form of one style or blend with `stylenet export-plain MODEL --style NAME`"
        )
    model = to_onnx(checkpoint.network, opset)
    props = metadata(checkpoint)
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    difference = max_difference(checkpoint.network, model, sizes)
    if plain:
        model = plain_graph(model, fixed)
        props = {prop.key: prop.value for prop in model.metadata_props}
        checked = [(1, *fixed)] if fixed else sizes
        difference = max(difference, max_difference(checkpoint.network, model, checked))
    if not difference <= tolerance:  # also refuses NaN
        raise StylenetError(
            f"onnxruntime differs from PyTorch by {difference:.2e} > tolerance {tolerance:.2e}: "
            f"{output} not written"
        )
    data = model.SerializeToString()
    write_atomically(output, lambda tmp: tmp.write_bytes(data), overwrite)
    return ExportReport(output, difference, props)


def _sha256(path: str | None) -> str:
    """Checksum of the style image, "unknown" when the training machine's file is not here."""
    if not path or not Path(path).is_file():
        log.warning("style image %s not found: its checksum is recorded as unknown", path)
        return "unknown"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version() -> str:
    try:
        return version("stylenet")
    except PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "unknown"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def export_task(cfg: DictConfig) -> None:
    """Export cfg.ckpt to cfg.output and log what was written."""
    for chatty in ("onnxscript", "onnx_ir"):  # their graph optimisers log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    report = export_checkpoint(
        ckpt=cfg.ckpt,
        output=cfg.output,
        overwrite=cfg.overwrite,
        opset=cfg.opset,
        tolerance=cfg.tolerance,
        sizes=[tuple(size) for size in cfg.parity_sizes],
        plain=cfg.plain,
        size=cfg.size,
    )
    meta = report.metadata
    log.info(
        "wrote %s%s: style %s, %s training steps, width %s, %s residual blocks; "
        "max |onnxruntime - PyTorch| = %.1e",
        report.output,
        " (plain form)" if cfg.plain else "",
        meta["style_name"],
        meta["training_steps"],
        meta["network_width"],
        meta["network_num_res_blocks"],
        report.max_difference,
    )


main = hydra_app("export")(export_task)

if __name__ == "__main__":
    main()
