"""The README's picture of the web page: `stylenet serve` with the bundled styles, in headless
Chromium, a photo painted in one of them.

    .venv/bin/python docs/screenshot.py [--photo PATH] [--style NAME] [--out docs/serve.jpg]

Needs the [serve] extra, Playwright (the [dev] extra) and a Chromium binary (apt-get install
chromium): the same browser tests/test_serve.py drives.
"""

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image

from stylenet.runtime.images import save_image
from stylenet.runtime.serve import Service
from stylenet.runtime.serve.server import in_background
from stylenet.runtime.styles import DEFAULT_STYLE
from stylenet.training.paths import shared_data_dir

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ALL_THUMBNAILS_SHOWN = (
    "() => [...document.querySelectorAll('.style img')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def screenshot(photo: Path, style: str, chromium: str) -> Image.Image:
    """The page after `photo` was painted in `style`, the split between photo and painting at
    the middle."""
    from playwright.sync_api import sync_playwright

    with in_background(Service.load()) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.wait_for_function(ALL_THUMBNAILS_SHOWN)
        page.click(f'.style[data-style="{style}"]')
        page.set_input_files("#file", str(photo))
        page.wait_for_selector('#compare[data-state="done"]')
        page.locator("#split").fill("50")
        png = page.screenshot(full_page=True)
        browser.close()
    return Image.open(io.BytesIO(png))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=shared_data_dir() / "photos/val/168084.jpg")
    parser.add_argument("--style", default=DEFAULT_STYLE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "serve.jpg")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.exit(1, "error: no chromium binary found (apt-get install chromium)\n")
    save_image(screenshot(args.photo, args.style, chromium), args.out, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
