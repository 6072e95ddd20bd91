"""Test helpers: the shared photos, a small exported model, and the messy files real users have.

Not a conftest: test modules import what they need. The model is exported once per test session
(torch.export takes seconds) and shared by the export, runtime and CLI tests.
"""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PHOTOS = sorted((DATA / "photos" / "val").glob("*.jpg"))
AMBER = DATA / "content" / "amber.jpg"
MOSAIC = DATA / "styles" / "mosaic.jpg"

_exported: dict[str, Path] = {}


def make_checkpoint(
    path: Path, width: int = 8, blocks: int = 1, seed: int = 0, stages: int = 2
) -> Path:
    """A checkpoint shaped like train.py's (Lightning keys and config) with random weights."""
    import torch

    from stylenet.network import TransformerNet

    torch.manual_seed(seed)
    network = TransformerNet(width, blocks, stages)
    config = {
        "network": {
            "_target_": "stylenet.network.TransformerNet",
            "width": width,
            "num_res_blocks": blocks,
            "stages": stages,
        },
        "style": {"name": "mosaic", "image": str(MOSAIC), "size": 512},
        "data": {"image_size": 256},
    }
    torch.save(
        {
            "state_dict": {f"network.{k}": v for k, v in network.state_dict().items()},
            "hyper_parameters": {"config": config},
            "global_step": 1234,
        },
        path,
    )
    return path


def run_export(*overrides: str) -> None:
    """export.py's task, in this process, with its Hydra config and these overrides."""
    import importlib.util

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    spec = importlib.util.spec_from_file_location("export_entry", ROOT / "export.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    GlobalHydra.instance().clear()  # another test may have left its Hydra initialised
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        entry.export(compose("export", overrides=list(overrides)))


def exported_model(folder: Path) -> Path:
    """A small model exported by export.py, made once per session in `folder` and shared."""
    if "model" not in _exported:
        ckpt = make_checkpoint(folder / "small.ckpt")
        run_export(f"ckpt={ckpt}", f"output={folder / 'mosaic.onnx'}")
        _exported["model"] = folder / "mosaic.onnx"
    return _exported["model"]


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG header announcing side x side pixels (past Pillow's bomb limit) with no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def messy_inputs(folder: Path) -> dict[str, Path]:
    """Files a photo folder really contains, keyed by what is special about them."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = PHOTOS[0].read_bytes()
    files = {
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.jpg",
        "bomb": folder / "bomb.png",
        "cmyk": folder / "cmyk.jpg",
        "rgba": folder / "rgba.png",
        "gray16": folder / "gray16.png",
        "animated": folder / "animated.gif",
        "rotated": folder / "rotated.jpg",
        "palette": folder / "palette.png",
        "tiny": folder / "tiny.png",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(photo[: len(photo) // 2])
    files["text"].write_text("these are not the pixels you are looking for\n")
    bomb_png(files["bomb"])
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(files["cmyk"])  # pure red
    rgba = Image.open(PHOTOS[0]).convert("RGB").resize((48, 32))
    rgba.putalpha(Image.linear_gradient("L").resize((48, 32)))
    rgba.save(files["rgba"])
    Image.fromarray(gray16_ramp()).save(files["gray16"])
    frames = [Image.new("RGB", (24, 16), color) for color in ("blue", "red", "green")]
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.open(PHOTOS[0]).convert("RGB").resize((60, 40)).save(files["rotated"], exif=exif)
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    palette.paste(1, (5, 5, 15, 15))
    palette.save(files["palette"], transparency=0)
    Image.new("RGB", (3, 2), "orange").save(files["tiny"])
    return files


def gray16_ramp() -> np.ndarray:
    """A 16-bit grey ramp over the whole range: Pillow's plain convert("RGB") makes it white."""
    return np.linspace(0, 65535, 32 * 64).reshape(32, 64).astype(np.uint16)


def linear_rgb_icc() -> bytes:
    """An ICC v2 display profile: sRGB primaries with a linear (gamma 1) tone curve.

    Pixels tagged with it are linear light, so converting them to sRGB must brighten mid-tones
    (linear 128 -> sRGB 188): a known answer for the ICC test, without a profile file on disk.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = b"linear sRGB\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"  # gamma 1.0, padded
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    # size, CMM, version 2.1, class, colour space, PCS, date, magic, flags..., D50 illuminant
    header = struct.pack(
        ">I4xI4s4s4s12x4s28x", size, 0x02100000, b"mntr", b"RGB ", b"XYZ ", b"acsp"
    )
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
