"""The styles that ship with the package: one exported model per painting, found by name.

Each file in `models/` is an ordinary exported model whose metadata is its model card (painting,
artist, year, licence, how it was trained, its measured quality): `Stylizer("wave")` and
`stylenet stylize --style wave` use it, `stylenet styles` lists them.
"""

import json
from pathlib import Path

from stylenet.errors import StylenetError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# The style `stylenet stylize` uses when none is named: the best-known painting of the field.
DEFAULT_STYLE = "starry_night"


def bundled_styles() -> dict[str, Path]:
    """Name -> model file of every bundled style, by name."""
    return {path.stem: path for path in sorted(MODELS_DIR.glob("*.onnx"))}


def model_path(style: str | Path) -> Path:
    """The model file for a bundled style's name, or `style` itself when it is a path.

    A name with no path separator and no .onnx suffix must be a bundled style: a typo is one line
    that lists them instead of "file not found".
    """
    path = Path(style)
    if isinstance(style, Path) or path.suffix.lower() == ".onnx" or len(path.parts) > 1:
        return path
    styles = bundled_styles()
    if str(style) in styles:
        return styles[str(style)]
    names = ", ".join(styles) or "none installed"
    raise StylenetError(f"unknown style {style!r}; bundled styles: {names} (or a path to an .onnx)")


def card(metadata: dict[str, str]) -> list[str]:
    """A model's card from its metadata, as lines: painting, training, measured quality."""
    get = metadata.get
    lines = [
        f"{get('style_painting', get('style_name', '?'))}, {get('style_artist', 'unknown')} "
        f"({get('style_year', 'unknown')}); {get('style_licence', 'licence unknown')}"
    ]
    if "network_width" in metadata:
        lines.append(
            f"network: {get('network_width')} x {get('network_num_res_blocks')} "
            f"({get('network_stages')} stages), {get('training_steps', '?')} steps at "
            f"{get('training_image_size', '?')} px, {get('training_time', 'time unknown')}"
        )
    if "training_command" in metadata:
        lines.append(f"trained with: {get('training_command')}")
    if "training_warm_start" in metadata:
        lines.append(f"starting from: {get('training_warm_start')}")
    quality = json.loads(get("quality") or "null")
    if quality:
        for line in quality_lines(quality):
            lines.append(line)
    return lines


def quality_lines(quality: dict) -> list[str]:
    """The measured figures of a card's "quality" record, each beside the reference's."""
    reference = quality.get("reference") or {}

    def beside(key: str, digits: int) -> str:
        ours = f"{quality[key]:.{digits}f}"
        return f"{ours} ({reference[key]:.{digits}f})" if key in reference else ours

    versus = f" (in brackets: {reference['name']})" if reference else ""
    lines = [
        f"quality on {quality['photos']}{versus}: style error {beside('style', 3)}, "
        f"content error {beside('content', 3)}"
    ]
    if "ms_1080" in quality:
        lines.append(f"speed: {beside('ms_1080', 0)} ms at 1080x1080 on {quality['machine']}")
    return lines
