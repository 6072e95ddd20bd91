"""The README's pictures: a few photos through every bundled style, or one photo through the blends
of a model of two styles.

    .venv/bin/python docs/picture.py [--out docs/styles.jpg] [--height 220]
    .venv/bin/python docs/picture.py --blend multi.onnx [--out docs/blend.jpg]

Photos down (from the shared data: the demo photo and two held-out photos), the photo and then
each bundled style across, labelled with its painting. With --blend: the demo photo, then the
model's first style blended into its second in steps of a quarter (`Stylizer.using`). Made
through the torch-free runtime, exactly as `stylenet stylize` makes them.
"""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from stylenet.runtime.images import load_image, save_image, to_image
from stylenet.runtime.styles import bundled_styles
from stylenet.runtime.stylizer import Stylizer
from stylenet.training.paths import shared_data_dir

PHOTOS = ("content/amber.jpg", "photos/val/35028.jpg", "photos/val/206097.jpg")
LABEL = 18  # pixels above each column for its name
GAP = 4  # white pixels between cells


def landscape(photo: Image.Image) -> Image.Image:
    """The photo's centre at 3:2, so that every row has the same width."""
    height = min(photo.height, round(photo.width * 2 / 3))
    width = round(height * 3 / 2)
    left, top = (photo.width - width) // 2, (photo.height - height) // 2
    return photo.crop((left, top, left + width, top + height))


def style_grid() -> tuple[list[list[Image.Image]], list[str]]:
    """Rows of cells (each photo, then each bundled style's result) and the column labels."""
    styles = {name: Stylizer(path) for name, path in bundled_styles().items()}
    rows = [[photo, *(s.stylize(photo) for s in styles.values())] for photo in photos(PHOTOS)]
    labels = ["photo"] + [s.metadata.get("style_painting", name) for name, s in styles.items()]
    return rows, labels


def blend_strip(model: Path) -> tuple[list[list[Image.Image]], list[str]]:
    """One row: the demo photo, then a model's first style blended into its second."""
    stylizer = Stylizer(model)
    if len(stylizer.style_names) != 2:
        raise SystemExit(f"{model}: a model of two styles is needed, it has {stylizer.style_names}")
    first, second = stylizer.style_names
    (photo,) = photos(PHOTOS[:1])
    steps = [0.0, 0.25, 0.5, 0.75, 1.0]
    cells = [stylizer.using({first: 1 - t, second: t}).stylize(photo) for t in steps]
    labels = ["photo", first, *(f"{1 - t:.0%} / {t:.0%}" for t in steps[1:-1]), second]
    return [[photo, *cells]], labels


def photos(relative: tuple[str, ...]) -> list[Image.Image]:
    """The shared data's photos, at most 1024 px, cropped to 3:2."""
    data = shared_data_dir()
    return [landscape(to_image(load_image(data / r, max_size=1024).rgb)) for r in relative]


def sheet(rows: list[list[Image.Image]], labels: list[str], height: int) -> Image.Image:
    """The cells in rows of `height` pixels, each column under its label."""
    rows = [
        [
            c.resize((round(c.width * height / c.height), height), Image.Resampling.LANCZOS)
            for c in row
        ]
        for row in rows
    ]
    widths = [max(row[i].width for row in rows) + GAP for i in range(len(labels))]
    image = Image.new("RGB", (sum(widths), LABEL + len(rows) * (height + GAP)), "white")
    draw = ImageDraw.Draw(image)
    x = 0
    for column, (label, width) in enumerate(zip(labels, widths, strict=True)):
        draw.text((x + 4, 3), label, fill="black")
        for r, row in enumerate(rows):
            image.paste(row[column], (x, LABEL + r * (height + GAP)))
        x += width
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, help="default: docs/styles.jpg, with --blend docs/blend.jpg"
    )
    parser.add_argument("--height", type=int, default=220, help="height of a row in pixels")
    parser.add_argument("--blend", type=Path, help="a model of two styles: its blend strip instead")
    args = parser.parse_args()
    rows, labels = blend_strip(args.blend) if args.blend else style_grid()
    out = args.out or Path(__file__).parent / ("blend.jpg" if args.blend else "styles.jpg")
    save_image(sheet(rows, labels, args.height), out, overwrite=True)
    print(f"wrote {out}: {len(rows)} x {len(labels)}")


if __name__ == "__main__":
    main()
