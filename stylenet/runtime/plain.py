"""The plain form of an exported model: `image` in, `stylized` out, nothing else.

An exported model (stylenet/training/export.py) also carries the tiling interface: optional
inputs of ONNX type optional(tensor) with their defaults inside the graph (OptionalHasElement
and If), boolean switches (Where) between given, pooled and own instance-norm statistics, and the
`norm_stats` output. Runtimes other than onnxruntime may refuse all of it: OpenCV 4 stops at the
BOOL tensors, then at Unsqueeze on several axes and at the shape arithmetic of dynamic sizes. The
plain form computes what a caller who feeds only `image` gets: the defaults replace the optional
inputs, each switch becomes the branch they select, and the statistics output goes with
everything only it needed; with a fixed size, every value computed from shapes and constants is
folded into an initializer. No BOOL tensor, If or Optional is left, and in onnxruntime the plain
form computes the model's pixels exactly. OpenCV 5 loads the plain form of any size, OpenCV 4 (4.9
and later; 4.8 computes ReduceMean wrong at some sizes) the fixed-size one.

A model of several styles has a plain form per style or blend: its `style_weights` input becomes
a constant, the style chosen as `Stylizer.using` takes it.

Needs the `onnx` package (pip install 'stylenet[quantize]'), never torch.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from stylenet.errors import StylenetError
from stylenet.runtime.images import write_atomically
from stylenet.runtime.styles import model_path
from stylenet.runtime.stylizer import (
    INPUT_NAME,
    OPTIONAL_INPUTS,
    OUTPUT_NAME,
    STATS_NAME,
    STYLE_WEIGHTS_NAME,
    Stylizer,
)

# (batch, height, width) on which the plain form is compared with the model before writing:
# odd sizes exercise the padding and cropping, whose shape arithmetic the plain form keeps.
CHECK_SIZES = ((1, 5, 7), (2, 33, 65), (1, 257, 191))
# Largest |plain - full| accepted (onnxruntime, [0, 1] pixels): the same arithmetic (0 measured, at
# any size and at a fixed one), unless onnxruntime optimises the two graphs differently.
TOLERANCE = 1e-5


def plain_model(
    model: str | Path,
    output: str | Path,
    size: tuple[int, int] | None = None,
    overwrite: bool = False,
    style: str | Mapping[str, float] | None = None,
) -> float:
    """Write the plain form (`plain_graph`) of an exported model (a bundled style's name or an
    .onnx file) to `output`, only if onnxruntime gives the model's pixels with it; returns the
    largest difference measured.

    `size` (height, width): a graph for one image of that size (what OpenCV 4 loads); None:
    any batch, height and width. `style`: for a model of several styles, which one or which
    blend (as `Stylizer.using` takes it).
    """
    path, output, size = model_path(model), Path(output), fixed_size(size)
    if output.exists() and not overwrite:
        raise StylenetError(f"{output} exists (overwrite to replace it)")
    stylizer = Stylizer(path)  # one-line errors for files that are not stylenet models
    if style is not None:
        stylizer = stylizer.using(style)
    stylizer.require_style()
    full = onnx.load(path)
    plain = plain_graph(full, size, stylizer.weights, stylizer.style)
    sizes = [(1, *size)] if size else CHECK_SIZES
    difference = max_difference(full, plain, sizes, stylizer.weights)
    if not difference <= TOLERANCE:  # also refuses NaN
        raise StylenetError(
            f"the plain form of {path} differs from it by {difference:.2e} > {TOLERANCE:.0e}: "
            f"{output} not written"
        )
    data = plain.SerializeToString()
    write_atomically(output, lambda tmp: tmp.write_bytes(data), overwrite)
    return difference


def plain_graph(
    model: onnx.ModelProto,
    size: Sequence[int] | None = None,
    style_weights: np.ndarray | None = None,
    style: str | None = None,
) -> onnx.ModelProto:
    """`model` as a graph with only `image` in and `stylized` out, computing what `model`
    computes when fed only `image`: any batch, height and width, or with `size` (height,
    width) one 1 x 3 x height x width image, its shape arithmetic folded. A model of several
    styles needs `style_weights` ([1, styles]) and the name of that style or blend, `style`.
    `model` is left as is.
    """
    size = fixed_size(size)
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    graph = plain.graph
    props = {prop.key: prop.value for prop in plain.metadata_props}
    if graph.input[-1].name == STYLE_WEIGHTS_NAME:
        if style_weights is None or style is None:
            raise StylenetError("a model of several styles: its plain form is for one of them")
        _fix_style(graph, props, style_weights, style)
    outputs = [value.name for value in graph.output]
    if outputs != [OUTPUT_NAME, STATS_NAME]:
        raise StylenetError(
            f"not an exported stylenet model with the statistics interface (outputs {outputs}): "
            "only those have a plain form"
        )
    del graph.output[1:]
    _take_defaults(graph)
    _select_constant_branches(graph)
    _remove_unused(graph)
    if size is not None:
        _fold_for_size(plain, size)
    _unsqueeze_one_axis_at_a_time(graph)
    _remove_unused(graph)
    plain.ir_version = onnx.helper.find_min_ir_version_for(plain.opset_import)
    shape = "any batch, height and width" if size is None else f"one image, {size[1]}x{size[0]} px"
    props["convention"] = (
        f"plain form: input '{INPUT_NAME}', output '{OUTPUT_NAME}' only: float32 NCHW RGB in "
        f"[0, 1], {shape}; output clamped to [0, 1], same size as the input; not tileable"
    )
    onnx.helper.set_model_props(plain, props)
    onnx.checker.check_model(plain, full_check=True)
    return plain


def _fix_style(
    graph: onnx.GraphProto, props: dict[str, str], weights: np.ndarray, style: str
) -> None:
    """The style weights input as the constant `weights`, and the metadata of that one style or
    blend, `style`: its name and the cards of the styles in it."""
    graph.initializer.append(
        numpy_helper.from_array(weights.astype(np.float32), STYLE_WEIGHTS_NAME)
    )
    _replace(graph.input, [value for value in graph.input if value.name != STYLE_WEIGHTS_NAME])
    names = json.loads(props.pop("style_names"))
    used = {name for name, weight in zip(names, weights[0], strict=True) if weight > 0}
    cards = [card for card in json.loads(props["style_cards"]) if card["name"] in used]
    props["style_cards"] = json.dumps(cards)
    props["style_name"] = style


def fixed_size(size: object) -> tuple[int, int] | None:
    """`size` as (height, width), None for None; a one-line error unless two positive integers."""
    if size is None:
        return None
    if not (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(type(n) is int and n > 0 for n in size)
    ):
        raise StylenetError(f"size must be [height, width], two positive integers, got {size}")
    return size[0], size[1]


def max_difference(
    full: onnx.ModelProto,
    plain: onnx.ModelProto,
    sizes: Iterable[tuple[int, int, int]],
    style_weights: np.ndarray | None = None,
) -> float:
    """Largest |plain - full| in onnxruntime over random images of the given (batch, height,
    width), the full model fed `style_weights` where it has several styles; infinite where the
    shapes differ."""
    sessions = [
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for model in (full, plain)
    ]
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, height, width in sizes:
        feeds = {INPUT_NAME: rng.random((batch, 3, height, width), dtype=np.float32)}
        style = {} if style_weights is None else {STYLE_WEIGHTS_NAME: style_weights}
        expected = sessions[0].run([OUTPUT_NAME], {**feeds, **style})[0]
        actual = sessions[1].run([OUTPUT_NAME], feeds)[0]
        if actual.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def _take_defaults(graph: onnx.GraphProto) -> None:
    """Each optional input replaced by its default, the constant of the else branch of the If
    that export put at the top of the graph (`export.optional_inputs`)."""
    optional = {value.name for value in graph.input if value.type.HasField("optional_type")}
    tested = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "OptionalHasElement"}
    switches = [n for n in graph.node if n.op_type == "If" and tested.get(n.input[0]) in optional]
    if optional != set(OPTIONAL_INPUTS) or len(switches) != len(optional):
        raise StylenetError(
            f"not an exported stylenet model: expected the optional inputs {OPTIONAL_INPUTS}, "
            f"found {sorted(optional)}"
        )
    for switch in switches:
        branch = next(a.g for a in switch.attribute if a.name == "else_branch")
        (constant,) = branch.node
        default = numpy_helper.to_array(constant.attribute[0].t)
        graph.initializer.append(numpy_helper.from_array(default, switch.output[0]))
    outputs = {switch.output[0] for switch in switches}
    _replace(graph.node, [node for node in graph.node if node.output[0] not in outputs])
    _replace(graph.input, [value for value in graph.input if value.name not in optional])


def _select_constant_branches(graph: onnx.GraphProto) -> None:
    """Where(c, x, y) with a constant scalar c is x or y: every statistics switch becomes the
    branch its default selects. (Where broadcasts; here the selected input has the output's
    shape, which `max_difference` checks before a plain form is written.)"""
    renamed: dict[str, str] = {}
    kept = []
    for node in graph.node:  # in topological order: a value is renamed before its uses
        node.input[:] = [renamed.get(name, name) for name in node.input]
        condition = _constant(graph, node.input[0]) if node.op_type == "Where" else None
        if condition is not None and condition.size == 1:
            renamed[node.output[0]] = node.input[1] if condition.item() else node.input[2]
        else:
            kept.append(node)
    _replace(graph.node, kept)


def _unsqueeze_one_axis_at_a_time(graph: onnx.GraphProto) -> None:
    """An Unsqueeze on several (non-negative, constant) axes as one Unsqueeze per axis in
    increasing order, the same tensor: OpenCV 4 implements only one axis."""
    nodes = []
    for node in graph.node:
        axes = _constant(graph, node.input[1]) if node.op_type == "Unsqueeze" else None
        if axes is None or axes.size < 2 or axes.min() < 0:
            nodes.append(node)
            continue
        value = node.input[0]
        for axis in sorted(axes.tolist()):
            name = f"unsqueeze_axis_{axis}"
            if _constant(graph, name) is None:
                graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), name))
            out = node.output[0] if axis == axes.max() else f"{node.output[0]}_at_{axis}"
            nodes.append(onnx.helper.make_node("Unsqueeze", [value, name], [out]))
            value = out
    _replace(graph.node, nodes)


def _fold_for_size(model: onnx.ModelProto, size: tuple[int, int]) -> None:
    """Fix the graph to one image of `size` and fold every value computed only from shapes and
    constants (the padding, reshaping and cropping arithmetic) into an initializer.

    At a fixed size every shape is known (no stylenet graph has data-dependent shapes), so the
    values that the other nodes read from that arithmetic are computed by running the graph once
    in onnxruntime.
    """
    graph = model.graph
    for value in (graph.input[0], graph.output[0]):
        for dim, length in zip(value.type.tensor_type.shape.dim, (1, 3, *size), strict=True):
            dim.Clear()
            dim.dim_value = length
    stored = {init.name for init in graph.initializer}
    static = set(stored)
    read: dict[str, None] = {}  # static values that other nodes read, in order
    for node in graph.node:
        if node.op_type in ("Shape", "Size") or all(x in static for x in node.input if x):
            static.update(node.output)
        else:
            read.update(dict.fromkeys(x for x in node.input if x in static and x not in stored))
    if not read:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    _replace(probe.graph.output, map(onnx.helper.make_empty_tensor_value_info, read))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(list(read), {INPUT_NAME: np.zeros((1, 3, *size), np.float32)})
    for name, value in zip(read, values, strict=True):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    _replace(graph.node, [node for node in graph.node if node.output[0] not in static])
    del graph.value_info[:]  # shapes stated for any size


def _remove_unused(graph: onnx.GraphProto) -> None:
    """Drop the nodes, initializers and shape notes that no graph output needs."""
    needed = {value.name for value in graph.output}
    nodes = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    _replace(graph.node, reversed(nodes))
    _replace(graph.initializer, [init for init in graph.initializer if init.name in needed])
    _replace(graph.value_info, [value for value in graph.value_info if value.name in needed])


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of initializer `name`, None if there is none."""
    init = next((init for init in graph.initializer if init.name == name), None)
    return None if init is None else numpy_helper.to_array(init)


def _replace(field: object, items: Iterable[object]) -> None:
    """Set a repeated protobuf field (nodes, inputs, initializers) to `items`."""
    items = list(items)
    del field[:]  # type: ignore[attr-defined]
    field.extend(items)  # type: ignore[attr-defined]
