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
    if "style_cards" in metadata:  # several styles: a line each
        lines = [
            f"{c['name']}: {c['painting']}, {c['artist']} ({c['year']}); {c['licence']}"
            for c in json.loads(metadata["style_cards"])
        ]
    else:
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
    edges = f", edge correlation {beside('edges', 3)}" if "edges" in quality else ""
    lines = [
        f"quality on {quality['photos']}{versus}: style error {beside('style', 3)}, "
        f"content error {beside('content', 3)}{edges}"
    ]
    if "ms_1080" in quality:
        lines.append(f"speed: {beside('ms_1080', 0)} ms at 1080x1080 on {quality['machine']}")
    return lines


def parse_blend(text: str) -> dict[str, float]:
    """A style or a blend as the CLI writes it: "wave", or "starry_night:0.7,wave:0.3" (name ->
    weight; a name without a weight weighs 1)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            value = None
        if not name or value is None or name in weights:
            raise StylenetError(
                f"style {text!r}: expected NAME or NAME:WEIGHT,NAME:WEIGHT with each name once"
            )
        weights[name] = value
    return weights


def blend_label(weights: dict[str, float]) -> str:
    """The name of a style or blend (weights summing to 1) in output file names:
    "wave", "starry_night70+wave30"."""
    used = {name: weight for name, weight in weights.items() if weight > 0}
    if len(used) == 1:
        return next(iter(used))
    return "+".join(f"{name}{round(100 * weight)}" for name, weight in used.items())
