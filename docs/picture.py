"""The README's opening picture: a few photos, each stylized by every bundled style.

    .venv/bin/python docs/picture.py [--out docs/styles.jpg] [--height 220]

Photos down (from the shared data: the demo photo and two held-out photos), the photo and then
each bundled style across, labelled with its painting. Made with the shipped model files through
the torch-free runtime, exactly as `stylenet stylize` makes them.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "styles.jpg")
    parser.add_argument("--height", type=int, default=220, help="height of a row in pixels")
    args = parser.parse_args()
    styles = {name: Stylizer(path) for name, path in bundled_styles().items()}
    data = shared_data_dir()
    rows = []
    for relative in PHOTOS:
        photo = landscape(to_image(load_image(data / relative, max_size=1024).rgb))
        cells = [photo, *(stylizer.stylize(photo) for stylizer in styles.values())]
        width = round(photo.width * args.height / photo.height)
        rows.append([cell.resize((width, args.height), Image.Resampling.LANCZOS) for cell in cells])
    labels = ["photo"] + [s.metadata.get("style_painting", name) for name, s in styles.items()]
    widths = [max(row[i].width for row in rows) + GAP for i in range(len(labels))]
    sheet = Image.new("RGB", (sum(widths), LABEL + len(rows) * (args.height + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for column, (label, width) in enumerate(zip(labels, widths, strict=True)):
        draw.text((x + 4, 3), label, fill="black")
        for r, row in enumerate(rows):
            sheet.paste(row[column], (x, LABEL + r * (args.height + GAP)))
        x += width
    save_image(sheet, args.out, overwrite=True)
    print(f"wrote {args.out}: {len(rows)} photos x {len(styles)} styles")


if __name__ == "__main__":
    main()
