"""Quality benchmark: a model's style and content errors next to Gatys optimisation, with speed.

    .venv/bin/python benchmarks/quality.py MODEL.onnx [MODEL.ckpt ...] [--count 8 --size 512]
        [--gatys-count 2 --gatys-size 256 --steps 0,50,100,300] [--grid grid.png]

For each model (an exported .onnx or a train.py checkpoint), on a fixed subset of held-out photos
(evenly spaced in ../shared/data/photos/val, longer side at most --size, never enlarged): the
style and content errors, the edge correlation (higher keeps more of the photo's edges) and the
relu1_2 contrast (1: as much colour and fine-stroke variation as the painting) of
stylenet.training.quality, with the style error of each VGG layer, the model's total training
loss and its latency per image. A folder of another tool's results (one image per photo, named
after it) is scored the same way, against the painting given by --style.
Every model is measured against the painting at one scale (--style-size), whatever it was
trained with. Then, for models, on the first --gatys-count photos at most --gatys-size px
(smaller when time demands: ~0.4 s per L-BFGS step at 256 px, ~1.5 s at 481x321 on 2 CPU
cores), Gatys optimisation with the model's own loss weights and style scale: the same figures
after each of --steps (0: the photo itself), and the step at which it first reaches the model's
total loss, i.e. how many optimisation steps one forward pass of the network is worth. Prints
Markdown.
"""

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from stylenet.errors import StylenetError
from stylenet.runtime.images import find_images, save_image
from stylenet.runtime.stylizer import Stylizer
from stylenet.training.app import one_line_errors
from stylenet.training.data import load_style_image
from stylenet.training.export import Clamped, load_checkpoint
from stylenet.training.loss import PerceptualLoss
from stylenet.training.optimize import gatys_steps, load_photo, to_rgb
from stylenet.training.paths import CONFIG_DIR, shared_data_dir
from stylenet.training.quality import CONTRAST_LAYER, STYLE_LAYERS, Scorer

DATA_DIR = shared_data_dir()
CELL = 192  # height of a contact-sheet cell in pixels


@dataclass
class Model:
    """A trained network behind one call, with the training config it records; or a folder of
    another tool's stylized photos (`network` false: nothing to time or run at other sizes)."""

    name: str
    stylize: Callable[[torch.Tensor, str], torch.Tensor]  # (1, 3, H, W) in [0, 1], photo name
    config: dict
    network: bool = True


@dataclass
class Result:
    """One stylized image's figures: errors, edge correlation, contrast, the style error of each
    VGG layer, time."""

    style: float
    content: float
    edges: float
    contrast: float
    total: float
    seconds: float
    layers: dict[str, float]


NUMBER_FIELDS = [f.name for f in fields(Result) if f.name != "layers"]


@dataclass
class PhotoRun:
    """What one photo gave at the Gatys size: the model, Gatys at each step count, and images."""

    model: Result
    gatys: dict[int, Result] = field(default_factory=dict)
    reached: int | None = None  # first Gatys step at or below the model's total loss
    images: dict[str, np.ndarray] = field(default_factory=dict)


def load_model(path: Path) -> Model:
    """An .onnx model in onnxruntime (as users run it), a checkpoint in PyTorch, or a folder of
    stylized photos."""
    if path.is_dir():
        return stored_outputs(path)
    if path.suffix == ".onnx":
        stylizer = Stylizer(path)
        config = json.loads(stylizer.metadata.get("training_config") or "{}")

        def run(photo: torch.Tensor, name: str) -> torch.Tensor:
            return torch.from_numpy(stylizer.run(photo.permute(0, 2, 3, 1).numpy())).permute(
                0, 3, 1, 2
            )

        return Model(path.name, run, config)
    checkpoint = load_checkpoint(path)
    network = Clamped(checkpoint.network).eval()
    return Model(path.name, torch.no_grad()(lambda photo, name: network(photo)), checkpoint.config)


def stored_outputs(folder: Path) -> Model:
    """Another tool's results, scored like a model: for photo P.jpg the one image in `folder`
    named P.* or P_*.* (P_styled.png, P_wave.jpg), at the photo's size. Needs --style."""
    files = find_images(folder)

    def lookup(photo: torch.Tensor, name: str) -> torch.Tensor:
        stem = Path(name).stem
        matches = [f for f in files if f.stem == stem or f.stem.startswith(f"{stem}_")]
        if len(matches) != 1:
            raise StylenetError(f"{folder}: {len(matches)} images named {stem}.* or {stem}_*.*")
        output = load_photo(matches[0], None)[0]
        if output.shape != photo.shape:
            raise StylenetError(
                f"{matches[0]} is {output.shape[3]}x{output.shape[2]}, its photo "
                f"{photo.shape[3]}x{photo.shape[2]}: make the outputs at --size"
            )
        return output

    return Model(folder.name, lookup, {}, network=False)


def style_path(config: dict, override: Path | None) -> Path:
    """The model's style image: --style, the recorded path, or its name in the shared styles.

    A model trained elsewhere records a path from that machine; the checksum it records (when it
    does) makes sure the local file is the same painting.
    """
    if override is not None:
        return override
    style = config.get("style") or {}
    recorded = Path(style.get("image") or "")
    for candidate in (recorded, DATA_DIR / "styles" / recorded.name):
        if recorded.name and candidate.is_file():
            checksum = style.get("sha256")
            if checksum and hashlib.sha256(candidate.read_bytes()).hexdigest() != checksum:
                raise StylenetError(f"{candidate} is not the style image the model was trained on")
            return candidate
    raise StylenetError(f"style image {recorded} not found: pass --style PATH")


def build_loss(config: dict, vgg_weights: str | None) -> tuple[PerceptualLoss, str]:
    """The model's own training loss (weights, layers), with the local VGG16 weights.

    Relative errors do not depend on the VGG file, so the local one measures the same loss.
    """
    loss_config = config.get("loss")
    source = "the model's training config"
    if not loss_config:
        loss_config = OmegaConf.to_container(
            OmegaConf.load(CONFIG_DIR / "loss" / "perceptual.yaml")
        )
        source = "configs/loss/perceptual.yaml (the model records none)"
    return instantiate({**loss_config, "vgg_weights": vgg_weights}), source


@dataclass
class Judge:
    """What scores one model: its own training loss and the quality scorer, set to its style."""

    loss: PerceptualLoss
    scorer: Scorer
    style_file: Path
    style_size: int  # the loss's: the model's own
    source: str  # where the loss settings came from

    @classmethod
    def of(
        cls, model: Model, style: Path | None, ruler_size: int, vgg_weights: str | None
    ) -> "Judge":
        """The model's loss at its own style size; the scorer's ruler at `ruler_size` for all."""
        loss, source = build_loss(model.config, vgg_weights)
        style_size = (model.config.get("style") or {}).get("size", ruler_size)
        style_file = style_path(model.config, style)
        loss.set_style(load_style_image(style_file, style_size))
        scorer = Scorer(load_style_image(style_file, ruler_size), vgg=loss.vgg)
        return cls(loss, scorer, style_file, style_size, source)


def unique_labels(paths: list[Path]) -> list[str]:
    """Each path's shortest trailing part that no other path ends with: the models' headings and
    contact-sheet columns (two runs' step_000500.ckpt must not share a column)."""
    labels = []
    for path in paths:
        depth = 1
        while depth < len(path.parts) and any(
            other != path and other.parts[-depth:] == path.parts[-depth:] for other in paths
        ):
            depth += 1
        labels.append(str(Path(*path.parts[-depth:])))
    return labels


def pick_photos(folder: Path, count: int) -> list[Path]:
    """`count` photos evenly spaced over the sorted folder: a fixed, varied subset."""
    files = find_images(folder)
    if not files:
        raise StylenetError(f"no photos in {folder}")
    return [files[i * len(files) // count] for i in range(min(count, len(files)))]


def measure(
    model: Model, loss: PerceptualLoss, scorer: Scorer, photo: torch.Tensor, name: str
) -> tuple[Result, torch.Tensor]:
    """The model's figures on one photo (file `name`), and its output."""
    start = time.perf_counter()
    output = model.stylize(photo, name)
    seconds = time.perf_counter() - start
    return score(loss, scorer, output, photo, seconds), output


def score(
    loss: PerceptualLoss, scorer: Scorer, output: torch.Tensor, photo: torch.Tensor, seconds: float
) -> Result:
    """Quality errors and total training loss of `output` for `photo`."""
    errors = {name: float(value) for name, value in scorer(output, photo).items()}
    with torch.no_grad():
        total = float(loss(output, photo)["total"])
    layers = {name: errors[name] for name in STYLE_LAYERS}
    return Result(
        errors["style"],
        errors["content"],
        errors["edges"],
        errors["contrast"],
        total,
        seconds,
        layers,
    )


def run_gatys(
    model: Model,
    loss: PerceptualLoss,
    scorer: Scorer,
    photo: torch.Tensor,
    name: str,
    steps: list[int],
) -> tuple[PhotoRun, float]:
    """Model and Gatys on one photo; also the mean seconds per Gatys step."""
    model_result, output = measure(model, loss, scorer, photo, name)
    run = PhotoRun(model_result, images={"model": to_rgb(output)})
    elapsed, iterator = 0.0, gatys_steps(loss, photo)
    for step in range(max(steps) + 1):
        start = time.perf_counter()
        image, terms = next(iterator)
        elapsed += time.perf_counter() - start
        if run.reached is None and terms["total"] <= model_result.total:
            run.reached = step
        if step in steps:
            run.gatys[step] = score(loss, scorer, image, photo, elapsed)
        if step in steps and step > 0:  # step 0 is the photo
            run.images[f"Gatys {step}"] = to_rgb(image)
    return run, elapsed / max(1, max(steps))


def mean_result(results: list[Result]) -> Result:
    """The mean of each figure."""
    means = {key: statistics.mean(getattr(r, key) for r in results) for key in NUMBER_FIELDS}
    layers = {name: statistics.mean(r.layers[name] for r in results) for name in STYLE_LAYERS}
    return Result(**means, layers=layers)


TABLE_HEADER = (
    "| photos | method | style error | content error | edge correlation | total loss "
    "| time per image | "
    + " | ".join(f"{name} style" for name in STYLE_LAYERS)
    + f" | {CONTRAST_LAYER} contrast |\n|---|---|---:|---:|---:|---:|---:|"
    + "---:|" * (len(STYLE_LAYERS) + 1)
)


def mean_row(label: str, photos: str, results: list[Result], time_text: str) -> str:
    """A Markdown row of mean figures (TABLE_HEADER's columns)."""
    mean = mean_result(results)
    layers = " | ".join(f"{mean.layers[name]:.3f}" for name in STYLE_LAYERS)
    return (
        f"| {photos} | {label} | {mean.style:.3f} | {mean.content:.3f} | {mean.edges:.3f} "
        f"| {mean.total:.3f} "
        f"| {time_text} | {layers} | {mean.contrast:.3f} |"
    )


def contact_sheet(rows: list[tuple[str, dict[str, np.ndarray]]], columns: list[str]) -> Image.Image:
    """Photos down, photo/models/Gatys across, each cell CELL px high; blank where none."""
    widths = [
        max(
            (
                round(img.shape[1] * CELL / img.shape[0])
                for _, c in rows
                if (img := c.get(col)) is not None
            ),
            default=CELL,
        )
        for col in columns
    ]
    header = 20
    sheet = Image.new("RGB", (sum(widths), header + CELL * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for col, width in zip(columns, widths, strict=True):
        draw.text((x + 4, 4), col, fill="black")
        for r, (_, cells) in enumerate(rows):
            if (img := cells.get(col)) is not None:
                tile = Image.fromarray(img).resize((width, CELL), Image.Resampling.LANCZOS)
                sheet.paste(tile, (x, header + r * CELL))
        x += width
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="+",
        type=Path,
        help=".onnx models, .ckpt checkpoints, or folders of another tool's outputs (see --style)",
    )
    parser.add_argument("--photos", type=Path, default=DATA_DIR / "photos" / "val")
    parser.add_argument("--count", type=int, default=8, help="photos for the model figures (8)")
    parser.add_argument("--size", type=int, default=512, help="their longer side, max (512)")
    parser.add_argument("--gatys-count", type=int, default=2, help="photos for Gatys (2; 0: none)")
    parser.add_argument("--gatys-size", type=int, default=256, help="its longer side, max (256)")
    parser.add_argument("--steps", default="0,50,100,300", help="Gatys step counts to report")
    parser.add_argument("--style", type=Path, help="style image, if the recorded one is not here")
    parser.add_argument(
        "--style-size",
        type=int,
        default=512,
        help="the style image's longer side for the errors, the same for every model (512)",
    )
    parser.add_argument("--vgg-weights", help="VGG16 weights (default: $STYLENET_VGG_WEIGHTS)")
    parser.add_argument("--grid", type=Path, help="write a photos x models contact sheet here")
    args = parser.parse_args()
    with one_line_errors():
        report(args)


def report(args: argparse.Namespace) -> None:
    """Run the benchmark described by the command-line arguments and print it."""
    steps = sorted({int(s) for s in args.steps.split(",")})
    photos = pick_photos(args.photos, args.count)
    gatys_photos = photos[: args.gatys_count]
    tensors = {p.name: load_photo(p, args.size)[0] for p in photos}
    sizes = ", ".join(f"{name} ({t.shape[3]}x{t.shape[2]})" for name, t in tensors.items())
    print(f"photos: {len(photos)} of {args.photos}, longer side at most {args.size} px: {sizes}")
    if gatys_photos:
        print(
            f"Gatys (L-BFGS) on {len(gatys_photos)} of them, longer side at most "
            f"{args.gatys_size} px: " + ", ".join(p.name for p in gatys_photos)
        )
    print(f"CPU threads: {torch.get_num_threads()}; torch {torch.__version__}\n")
    sheet_rows = {name: {"photo": to_rgb(photo)} for name, photo in tensors.items()}
    columns = ["photo"]
    for path, label in zip(args.models, unique_labels(args.models), strict=True):
        model = load_model(path)
        model.name = label
        judge = Judge.of(model, args.style, args.style_size, args.vgg_weights)
        loss, scorer = judge.loss, judge.scorer
        weights = loss.style_weights
        print(
            f"## {model.name}: style {judge.style_file.name} at {args.style_size} px (loss: "
            f"{judge.style_size} px); loss from {judge.source}: {loss.style_statistics}, "
            f"style_weight {weights[0] if len(weights) == 1 else weights}, content_weight "
            f"{loss.content_weight} ({', '.join(loss.content_layers)}), "
            f"tv_weight {loss.tv_weight}\n"
        )
        print(TABLE_HEADER)
        results = []
        for photo_path in photos:
            result, output = measure(model, loss, scorer, tensors[photo_path.name], photo_path.name)
            results.append(result)
            sheet_rows[photo_path.name][model.name] = to_rgb(output)
        latency = statistics.median(r.seconds for r in results[1:] or results)  # 1st: warm-up
        where = f"{len(photos)} x max {args.size} px"
        print(mean_row("model, 1 forward pass", where, results, f"{latency * 1000:.0f} ms"))
        columns.append(model.name)
        if not gatys_photos or not model.network:
            continue
        columns += gatys_report(model, judge, gatys_photos, steps, args.gatys_size, sheet_rows)
    if args.grid:
        rows = [(name, cells) for name, cells in sheet_rows.items()]
        save_image(contact_sheet(rows, columns), args.grid, overwrite=True)
        print(f"contact sheet: {args.grid}")


def gatys_report(
    model: Model,
    judge: Judge,
    photos: list[Path],
    steps: list[int],
    size: int,
    sheet_rows: dict[str, dict[str, np.ndarray]],
) -> list[str]:
    """Gatys against the model on `photos` at `size` px: print the rows, add the images to
    `sheet_rows`; returns the contact sheet's new columns."""
    loss, scorer = judge.loss, judge.scorer
    runs, per_step = [], []
    model_at = f"{model.name} at {size} px"
    for photo_path in photos:
        photo = load_photo(photo_path, size)[0]
        run, seconds = run_gatys(model, loss, scorer, photo, photo_path.name, steps)
        runs.append(run)
        per_step.append(seconds)
        for label, image in run.images.items():
            column = model_at if label == "model" else f"{label} ({model.name})"
            sheet_rows[photo_path.name][column] = image
    where = f"{len(photos)} x max {size} px"
    model_ms = statistics.mean(r.model.seconds for r in runs) * 1000
    print(mean_row("model, 1 forward pass", where, [r.model for r in runs], f"{model_ms:.0f} ms"))
    step_time = statistics.mean(per_step)
    for step in steps:
        print(
            mean_row(
                f"Gatys L-BFGS, {step} steps" if step else "the photo as it is (0 steps)",
                where,
                [r.gatys[step] for r in runs],
                f"{step * step_time:.3g} s",
            )
        )
    reached = ", ".join(
        f"{p.name}: {r.reached if r.reached is not None else f'> {max(steps)}'}"
        for p, r in zip(photos, runs, strict=True)
    )
    print(f"\nGatys steps to reach the model's total loss: {reached}")
    print(f"Gatys: {step_time:.2f} s per L-BFGS step at {size} px\n")
    return [model_at] + [f"Gatys {step} ({model.name})" for step in steps if step]


if __name__ == "__main__":
    main()
