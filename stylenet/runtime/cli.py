"""The `stylenet` command: stylize photos with a bundled style or your own exported model
(`stylize`), list the bundled styles (`styles`), describe a model (`info`), make an int8 copy of
one (`quantize`), serve a web page and HTTP API (`serve`, with the [serve] extra).

Torch-free: it runs on the base install (onnxruntime, numpy, pillow, tqdm, click). A bad input
file costs one line naming it and the reason; the other inputs are still processed, and the exit
status says whether everything succeeded.
"""

import contextlib
import glob
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import click
from tqdm import tqdm

from stylenet.errors import StylenetError
from stylenet.runtime.images import (
    Pixels,
    find_files,
    load_image,
    readable_suffixes,
    save_image,
    saveable_format,
    to_image,
)
from stylenet.runtime.styles import DEFAULT_STYLE, bundled_styles, card, parse_blend
from stylenet.runtime.stylizer import Stylizer
from stylenet.runtime.tiling import AUTO_TILE_PIXELS, TILE

_GLOB_CHARS = re.compile(r"[*?\[]")
# What `stylenet serve` imports (the [serve] extra); the base install has none of them.
_SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")
# Files `stylize` treats as videos (stylenet.runtime.video, the [video] extra). Their results keep
# the input's container where video.FORMATS can write it, else are MP4.
VIDEO_OUTPUT_SUFFIXES = frozenset((".mp4", ".m4v", ".mov", ".mkv", ".webm"))
VIDEO_SUFFIXES = VIDEO_OUTPUT_SUFFIXES | frozenset(
    (".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".ogv")
)


@click.group()
@click.version_option(package_name="stylenet")
def main() -> None:
    """Fast neural style transfer with exported ONNX models (no PyTorch needed)."""


@dataclass
class Job:
    """One input image and where its result goes."""

    source: Path
    target: Path


@dataclass
class Tally:
    """Outcome counts for the summary line and the exit status."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def fail(self, name: Path | str, reason: str) -> None:
        self.failed.append(str(name))
        tqdm.write(f"failed: {name}: {reason}", file=sys.stderr)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--style",
    "-s",
    default=None,
    help=f"A bundled style (stylenet styles lists them). Default: {DEFAULT_STYLE}. With a "
    "--model of several styles: one of them, or a blend such as starry_night:0.7,wave:0.3.",
)
@click.option(
    "--model",
    "-m",
    type=click.Path(path_type=Path),
    help="Your own exported .onnx model instead (python export.py ckpt=... output=...).",
)
@click.option(
    "--output",
    "-o",
    "output_dir",
    type=click.Path(path_type=Path),
    help="Folder for the results, created if needed. Default: beside each input. Results are "
    "named {stem}_{style}.{ext}.",
)
@click.option("--recursive", "-r", is_flag=True, help="Also take images in subfolders.")
@click.option(
    "--max-size",
    type=click.IntRange(min=1),
    default=None,
    help="Shrink inputs so that the longer side is at most this many pixels.",
)
@click.option(
    "--strength",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="Blend of the original (0) and the stylized image (1).",
)
@click.option(
    "--preserve-color",
    is_flag=True,
    help="Keep the photo's colours; take only luminance from the style.",
)
@click.option(
    "--format",
    "fmt",
    default=None,
    help="Output format of images by extension (jpg, png, webp, ...); default: the input's.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (skipped otherwise).")
@click.option(
    "--stability",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Videos: 0 stylizes every frame on its own (the strokes shimmer); higher keeps the "
    "strokes on the scene as it moves, 1 the most. Default: 0.95, what measured best "
    "(docs/design.md).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Same-size images run together (helps on GPUs).",
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=None,
    help="Run images larger than TILE x TILE pixels in overlapping tiles of that size, in "
    f"bounded memory; 0: never. Default: tiles of {TILE} above {AUTO_TILE_PIXELS / 2**20:g} "
    "megapixels.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime intra-op threads (default: one per core).",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="onnxruntime execution provider, repeatable, in order of preference "
    "(default: CUDAExecutionProvider if available, else CPUExecutionProvider).",
)
def stylize(
    inputs: tuple[str, ...],
    style: str | None,
    model: Path | None,
    output_dir: Path | None,
    recursive: bool,
    max_size: int | None,
    strength: float,
    preserve_color: bool,
    fmt: str | None,
    overwrite: bool,
    stability: float | None,
    batch_size: int,
    tile: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Stylize image and video files, folders and glob patterns (INPUTS).

    \b
    stylenet stylize photo.jpg                    # writes photo_starry_night.jpg beside it
    stylenet stylize photos/ --style wave -o out/
    stylenet stylize photo.jpg --model my.onnx
    stylenet stylize photo.jpg --model multi.onnx --style starry_night:0.7,wave:0.3
    stylenet stylize clip.mp4 -o out/             # videos: pip install 'stylenet[video]'
    """
    suffix = None
    if fmt is not None:
        suffix = "." + fmt.lower().lstrip(".")
        if saveable_format(suffix) is None:
            raise click.BadParameter(f"cannot write {fmt!r} files", param_hint="--format")
    try:
        stylizer = open_style(model, style, providers or None, threads, tile)
    except StylenetError as e:
        raise click.ClickException(str(e)) from None
    tally = Tally()
    name = _safe_name(stylizer.style)
    sources = find_inputs(inputs, recursive, output_dir, name, tally)
    jobs = plan(sources, output_dir, name, suffix, tally)
    images = [job for job in jobs if not is_video(job.source)]
    with tqdm(total=len(images), unit="image", disable=len(images) <= 1, file=sys.stderr) as bar:
        for chunk in _chunks(images, batch_size):
            run_chunk(stylizer, chunk, max_size, strength, preserve_color, overwrite, tally)
            bar.update(len(chunk))
    for job in jobs:
        if is_video(job.source):
            run_video(
                stylizer, job, stability, max_size, strength, preserve_color, overwrite, tally
            )
    where = output_dir if output_dir is not None else "beside the inputs"
    click.echo(
        f"{tally.done} stylized, {tally.skipped} skipped, {len(tally.failed)} failed -> {where}"
    )
    if tally.failed:
        sys.exit(1)


def open_style(
    model: Path | None,
    style: str | None,
    providers: Sequence[str] | None,
    threads: int | None,
    tile: int | None,
) -> Stylizer:
    """The model `stylize` runs: a bundled style by name; or the --model file, with --style
    choosing among its styles (a blend of several is a model of several styles)."""
    if model is None:
        if style is not None and len(parse_blend(style)) > 1:
            raise StylenetError(
                "a blend needs one model of several styles (--model FILE --style "
                "NAME:0.7,NAME:0.3): the bundled styles are separate models"
            )
        return Stylizer(style or DEFAULT_STYLE, providers, threads, tile)
    stylizer = Stylizer(model, providers, threads, tile)
    if style is not None:
        return stylizer.using(style)
    stylizer.require_style()  # before any file, not once per file
    return stylizer


def find_inputs(
    args: Sequence[str], recursive: bool, output_dir: Path | None, style: str, tally: Tally
) -> list[tuple[Path, Path]]:
    """(file, folder its output mirrors) for each argument; folders and globs expanded.

    Files found in folders keep their subfolder below -o, so that a/x.jpg and b/x.jpg do not
    collide. A rerun never stylizes its own outputs: files inside -o when -o is a subfolder of a
    scanned folder are left out, and without -o so are files named like this style's results
    ({stem}_{style}.{ext}).
    """
    output_root = output_dir.resolve() if output_dir is not None else None
    found: list[tuple[Path, Path]] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = [
                f
                for f in find_media(path, recursive)
                if not _own_output(f, path, output_root, style)
            ]
            if not files:
                hint = "" if recursive else " (--recursive for subfolders)"
                tally.fail(path, f"no images or videos in this folder{hint}")
            found += [(f, f.parent.relative_to(path)) for f in files]
        elif not path.exists() and _GLOB_CHARS.search(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            if not matches:
                tally.fail(arg, "no file matches this pattern")
            found += [(m, Path()) for m in matches]
        else:
            found.append((path, Path()))
    return found


def is_video(path: Path) -> bool:
    """Whether `stylize` treats this file as a video, by its extension in any case."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def find_media(folder: Path, recursive: bool) -> list[Path]:
    """The images and videos in `folder` (and its subfolders when `recursive`), in a stable
    order."""
    return find_files(folder, readable_suffixes() | VIDEO_SUFFIXES, recursive)


def _own_output(file: Path, folder: Path, output_root: Path | None, style: str) -> bool:
    """Whether `file`, found in `folder`, is a result this command writes (see find_inputs)."""
    if output_root is None:
        return file.stem.endswith(f"_{style}")
    scanned = folder.resolve()
    return (
        output_root != scanned
        and output_root.is_relative_to(scanned)
        and file.resolve().is_relative_to(output_root)
    )


def plan(
    sources: list[tuple[Path, Path]],
    output_dir: Path | None,
    style: str,
    suffix: str | None,
    tally: Tally,
) -> list[Job]:
    """Output path per input: {stem}_{style}{suffix} in -o (mirroring subfolders), else beside
    the input; duplicates and name clashes dropped. Videos keep their container where it can be
    written, else become MP4; --format is for images."""
    jobs: list[Job] = []
    seen: set[Path] = set()
    targets: dict[Path, Path] = {}
    for source, subfolder in sources:
        if source.resolve() in seen:
            continue
        seen.add(source.resolve())
        if is_video(source):
            ext = source.suffix if source.suffix.lower() in VIDEO_OUTPUT_SUFFIXES else ".mp4"
        else:
            ext = suffix or (source.suffix if saveable_format(source.suffix) else ".png")
        folder = source.parent if output_dir is None else output_dir / subfolder
        target = folder / f"{source.stem}_{style}{ext}"
        if target in targets:
            tally.fail(source, f"output {target} would also be written for {targets[target]}")
            continue
        targets[target] = source
        jobs.append(Job(source, target))
    return jobs


def kept_existing(job: Job, overwrite: bool, tally: Tally) -> bool:
    """Whether `job`'s output exists and stays (no --overwrite): counted and said as skipped."""
    if overwrite or not job.target.exists():
        return False
    tally.skipped += 1
    tqdm.write(
        f"skipped: {job.source}: {job.target} exists (--overwrite to replace it)", file=sys.stderr
    )
    return True


def run_chunk(
    stylizer: Stylizer,
    jobs: list[Job],
    max_size: int | None,
    strength: float,
    preserve_color: bool,
    overwrite: bool,
    tally: Tally,
) -> None:
    """Load, stylize (same-size images together) and save `jobs`, one line per problem."""
    loaded: list[tuple[Job, Pixels]] = []
    for job in jobs:
        if kept_existing(job, overwrite, tally):
            continue
        try:
            pixels = load_image(job.source, max_size)
        except StylenetError as e:
            tally.fail(job.source, str(e))
            continue
        for note in pixels.notes:
            tqdm.write(f"note: {job.source}: {note}", file=sys.stderr)
        loaded.append((job, pixels))
    if not loaded:
        return
    try:
        results = stylizer.stylize_many(
            [pixels.rgb for _, pixels in loaded], strength, preserve_color, batch_size=len(loaded)
        )
    except Exception as e:  # onnxruntime failures (e.g. out of memory) have no common base class
        for job, _ in loaded:
            tally.fail(job.source, f"stylizing failed ({e}); --max-size or --tile may help")
        return
    for (job, pixels), rgb in zip(loaded, results, strict=True):
        alpha = pixels.alpha
        if alpha is not None and saveable_format(job.target.suffix) == "JPEG":
            tqdm.write(
                f"note: {job.source}: JPEG has no transparency: alpha dropped", file=sys.stderr
            )
        try:
            save_image(to_image(rgb, alpha), job.target, overwrite)
        except (StylenetError, OSError, ValueError) as e:
            tally.fail(job.source, f"cannot write {job.target}: {e}")
            continue
        tally.done += 1


def run_video(
    stylizer: Stylizer,
    job: Job,
    stability: float | None,
    max_size: int | None,
    strength: float,
    preserve_color: bool,
    overwrite: bool,
    tally: Tally,
) -> None:
    """Stylize one video (its own progress bar, in frames), one line per problem."""
    if kept_existing(job, overwrite, tally):
        return
    try:
        report = stylizer.stylize_video(
            job.source, job.target, stability, max_size, strength, preserve_color, overwrite
        )
    except StylenetError as e:
        tally.fail(job.source, str(e))
        return
    except OSError as e:
        tally.fail(job.source, f"cannot write {job.target}: {e}")
        return
    except Exception as e:  # onnxruntime failures (e.g. out of memory) have no common base class
        tally.fail(job.source, f"stylizing failed ({e}); --max-size may help")
        return
    for note in report.notes:
        tqdm.write(f"note: {job.source}: {note}", file=sys.stderr)
    tally.done += 1


@main.command()
def styles() -> None:
    """List the bundled styles with their model cards."""
    found = bundled_styles()
    if not found:
        raise click.ClickException("no bundled styles in this installation")
    for name, path in found.items():
        stylizer = Stylizer(path)
        default = " (default)" if name == DEFAULT_STYLE else ""
        click.echo(f"{name}{default}")
        for line in card(stylizer.metadata):
            click.echo(f"  {line}")
        click.echo()


@main.command()
@click.argument("model")
@click.option("--verbose", "-v", is_flag=True, help="Also every metadata entry, config included.")
def info(model: str, verbose: bool) -> None:
    """Show MODEL's card (a bundled style's name or an .onnx file): painting, training, quality,
    file and interface."""
    try:
        stylizer = Stylizer(model)
    except StylenetError as e:
        raise click.ClickException(str(e)) from None
    size = stylizer.path.stat().st_size
    click.echo(f"{stylizer.style}: {stylizer.path} ({size / 1e6:.1f} MB, {size} bytes)")
    for line in card(stylizer.metadata):
        click.echo(line)
    if not verbose:
        return
    for kind, args in (
        ("input", stylizer.session.get_inputs()),
        ("output", stylizer.session.get_outputs()),
    ):
        for arg in args:
            click.echo(f"{kind}: {arg.name} {arg.type} [{', '.join(map(str, arg.shape))}]")
    click.echo(f"providers: {', '.join(stylizer.session.get_providers())}")
    meta = dict(stylizer.metadata)
    config = meta.pop("training_config", None)
    for key in sorted(meta):
        click.echo(f"{key}: {meta[key]}")
    if config is not None:
        with contextlib.suppress(ValueError):  # not written by export.py: show it as it is
            config = json.dumps(json.loads(config), indent=2)
        click.echo(f"training_config: {config}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calibration",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of photos (searched recursively) to measure the int8 ranges on.",
)
@click.option(
    "--output", "-o", required=True, type=click.Path(path_type=Path), help="The int8 model."
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Calibration photos, spread over the folder.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def quantize(model: Path, calibration: Path, output: Path, count: int, overwrite: bool) -> None:
    """Write an int8 copy of MODEL (static quantisation calibrated on photos): a quarter of the
    size, faster on CPUs with int8 dot products, and within about 29 dB PSNR of the original.

    Needs the onnx package (pip install 'stylenet[quantize]').
    """
    with needs_onnx("stylenet quantize"):
        from stylenet.runtime.quantize import quantize_model
    try:
        used = quantize_model(model, calibration, output, count, overwrite)
    except StylenetError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {output}: int8, calibrated on {used} photos from {calibration}")


@contextlib.contextmanager
def needs_onnx(command: str) -> Iterator[None]:
    """Around the imports of a command that needs the onnx package (the [quantize] extra, not in
    the base install): without it, one line saying what to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        if e.name != "onnx":
            raise
        raise click.ClickException(
            f"{command} needs the onnx package: pip install 'stylenet[quantize]'"
        ) from None


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """--size WIDTHxHEIGHT as (height, width), the order of plain_model's size."""
    if value is None:
        return None
    width, sep, height = value.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) and int(height)):
        raise click.BadParameter(f"expected WIDTHxHEIGHT in pixels, e.g. 512x512, got {value!r}")
    return int(height), int(width)


@main.command("export-plain")
@click.argument("model")
@click.option(
    "--output", "-o", required=True, type=click.Path(path_type=Path), help="The plain model."
)
@click.option(
    "--size",
    callback=_size,
    metavar="WIDTHxHEIGHT",
    help="A graph for images of this size only, its shape arithmetic folded: what OpenCV 4 "
    "(4.9 and later) loads. Default: any size (onnxruntime, OpenCV 5).",
)
@click.option(
    "--style",
    "-s",
    help="For a model of several styles: one of them, or a blend such as a:0.7,b:0.3.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def export_plain(
    model: str, output: Path, size: tuple[int, int] | None, style: str | None, overwrite: bool
) -> None:
    """Write the plain form of MODEL (a bundled style's name or an .onnx file): only `image` in
    and `stylized` out, without the tiling interface, for runtimes other than onnxruntime. It is
    checked against MODEL in onnxruntime before it is written; it cannot be tiled.

    Needs the onnx package (pip install 'stylenet[quantize]').
    """
    with needs_onnx("stylenet export-plain"):
        from stylenet.runtime.plain import plain_model
    try:
        plain_model(model, output, size, overwrite, style)
    except StylenetError as e:
        raise click.ClickException(str(e)) from None
    only = f", {size[1]}x{size[0]} px images only" if size else ""
    which = f" in {style}" if style else ""
    click.echo(f"wrote {output}: the plain form of {model}{which}{only}")


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every network interface (anyone who can reach this "
    "machine can then use it).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free."
)
@click.option(
    "--models",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A folder of your own exported .onnx models, served beside the bundled styles "
    "(named after their files).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Photos stylized at the same time.",
)
@click.option(
    "--queue",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Requests that may wait for a worker; beyond them the server answers 503 (busy).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.001),
    default=25.0,
    show_default=True,
    help="Largest upload, in MB.",
)
@click.option(
    "--max-megapixels",
    type=click.FloatRange(min=0.001),
    default=50.0,
    show_default=True,
    help="Largest image, decoded (decompression bombs are refused before decoding).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds a client has to send its whole upload.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime threads per model (default: the cores shared out between the workers).",
)
def serve(
    host: str,
    port: int,
    models: Path | None,
    workers: int,
    queue: int,
    max_upload_mb: float,
    max_megapixels: float,
    timeout: float,
    threads: int | None,
) -> None:
    """A web page and an HTTP API to stylize photos (needs pip install 'stylenet[serve]').

    \b
    stylenet serve                       # then open http://127.0.0.1:8000
    curl -F image=@photo.jpg -F style=wave http://127.0.0.1:8000/api/stylize -o out.jpg
    API documentation: http://127.0.0.1:8000/docs
    """
    missing = [name for name in _SERVE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise click.ClickException(
            f"stylenet serve needs {', '.join(missing)}: pip install 'stylenet[serve]'"
        )
    from stylenet.runtime.serve import Limits, Service, listen, run

    limits = Limits(workers, queue, max_upload_mb, max_megapixels, timeout)
    try:
        service = Service.load(models, limits, threads, warn=partial(click.echo, err=True))
        sock = listen(host, port)
    except StylenetError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
    names = ", ".join(service.stylizers)
    click.echo(
        f"stylenet serve: {len(service.stylizers)} styles ({names}), {workers} "
        f"worker{'s' if workers > 1 else ''}, up to {queue} requests waiting"
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: listening on {host}: anyone who can reach this machine can use it")
    run(service, sock, click.echo)


def _chunks(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def _safe_name(style: str) -> str:
    """The style name as a file-name part: no path separators or spaces."""
    return re.sub(r"[^\w.-]+", "-", style).strip("-.") or "stylized"
