"""Stylizing images larger than memory allows, in overlapping tiles that join without seams.

Instance normalisation makes a tile's result depend on the statistics of what it sees: tiles
normalised with their own statistics get their own colours and contrast, and seams. So every tile
is normalised with the whole image's statistics, measured in one pass first (`stats_crops` picks
what that pass sees), and keeps only its centre: the part at least the network's receptive radius
away from the tile's edges, where its pixels are exactly the whole image's (docs/design.md).
"""

from collections.abc import Callable

import numpy as np

# By default, images of more pixels than this are stylized in tiles of TILE x TILE: a 24-megapixel
# photo then takes ~0.4 GB with the default 8 x 4 network, ~0.9 GB at full width (whole, those
# need ~0.2 and ~0.7 GB a megapixel; docs/benchmarks.md).
AUTO_TILE_PIXELS = 4_194_304
TILE = 1024
# The statistics pass runs on at most this many pixels: exact for images up to this size.
STATS_PIXELS = 1_048_576


def stats_crops(rgb: np.ndarray, overlap: int) -> np.ndarray:
    """What the statistics pass of a uint8 HxWx3 image runs on: [N, h, w, 3], pooled over N.

    The image itself up to `STATS_PIXELS`. Larger ones would need their whole size in memory, so
    their statistics are pooled over a grid of full-resolution crops spread over the image,
    `STATS_PIXELS` in all. Statistics depend on scale: on a 10-megapixel photo the tiles then came
    within 33.5 dB PSNR of the whole image's result, where the statistics of the photo shrunk to
    `STATS_PIXELS` gave 24.7 dB and visible blotches. Crops are twice the receptive radius: most
    pixels see real context rather than the crop's reflected border, and many crops sample the
    photo evenly (8x8 crops of 128 pixels did 6 and 12 dB better than 4x4 of 256 and 2x2 of 512).
    """
    height, width = rgb.shape[:2]
    if height * width <= STATS_PIXELS:
        return rgb[None]
    side = -(-2 * overlap // 32) * 32
    crop_height, crop_width = min(side, height), min(side, width)
    count = STATS_PIXELS // (crop_height * crop_width)
    rows = min(count, max(1, round((count * height / width) ** 0.5)))
    tops = np.linspace(0, height - crop_height, rows).astype(int)
    lefts = np.linspace(0, width - crop_width, count // rows).astype(int)
    return np.stack([rgb[y : y + crop_height, x : x + crop_width] for y in tops for x in lefts])


def stylize_in_tiles(
    rgb: np.ndarray,
    tile: int,
    overlap: int,
    align: int,
    run: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """A uint8 HxWx3 image through overlapping windows of at most `tile` x `tile` pixels.

    `run` stylizes one window (float [1, h, w, 3] in [0, 1] -> uint8 [1, h, w, 3]) with the whole
    image's statistics; each window keeps its centre, `overlap` away from its edges inside the
    image. `overlap` and the windows' starts are multiples of `align`, the network's downsampling:
    its stride-2 convolutions then see the same pixel grid in a tile as in the whole image.
    """
    out = np.empty_like(rgb)
    height, width = rgb.shape[:2]
    for rows, kept_rows, in_rows in spans(height, tile, overlap, align):
        for cols, kept_cols, in_cols in spans(width, tile, overlap, align):
            stylized = run(rgb[None, rows, cols].astype(np.float32) / 255)
            out[in_rows, in_cols] = stylized[0, kept_rows, kept_cols]
    return out


def spans(length: int, tile: int, overlap: int, align: int) -> list[tuple[slice, slice, slice]]:
    """Tiles along one axis: the window run, the part of it kept, and where that goes.

    The kept parts cut [0, length) into near-equal pieces starting at multiples of `align`; each
    window adds `overlap` (a multiple of `align`) on both sides (less at the image's edges) and
    is at most `tile` long.
    """
    most = (tile - 2 * overlap) // align * align
    count = -(-length // most)
    step = -(-length // (count * align)) * align
    result = []
    for start in range(0, length, step):
        stop = min(length, start + step)
        first = max(0, start - overlap)
        window = slice(first, min(length, stop + overlap))
        result.append((window, slice(start - first, stop - first), slice(start, stop)))
    return result
