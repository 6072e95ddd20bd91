"""Test helpers: the shared data, the real train config shrunk, a small exported model, and the
messy files real users have.

Test modules import what they need from here; conftest.py holds the fixtures. The model is
exported once per test session (torch.export takes seconds) and shared by every test that needs one.
"""

import struct
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from stylenet.training.network import TransformerNet, UpsampleConv
from stylenet.training.paths import CONFIG_DIR, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]  # the checkout: train.py, export.py, optimize.py
DATA = shared_data_dir()
VGG_WEIGHTS = DATA.parent / "weights" / "vgg16-imagenet-features.pth"
PHOTO_DIR = DATA / "photos"
PHOTOS = sorted((PHOTO_DIR / "val").glob("*.jpg"))  # held-out photos, in a fixed order
STYLES = DATA / "styles"
AMBER = DATA / "content" / "amber.jpg"
MOSAIC = STYLES / "mosaic.jpg"

# Overrides that shrink a training run to a few seconds on a CPU.
SMALL = [
    "data.image_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    f"data.val_root={PHOTO_DIR / 'val'}",
    "style.size=128",
    "network.width=8",
    "network.num_res_blocks=1",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
]


def compose(config_name: str, overrides: list[str], **kwargs):
    """The package's real config `config_name`, composed with `overrides`, Hydra left clean."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import stylenet.training.app  # noqa: F401  registers the config resolvers

    GlobalHydra.instance().clear()  # another test may have left its Hydra initialised
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides, **kwargs)


def compose_train(run_dir: Path, *overrides: str):
    """The real train config, shrunk for a CPU test, with its run folder at `run_dir`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    in_process = [
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "callbacks.sample_grid.every_n_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    cfg = compose("train", [*SMALL, *in_process, *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        del cfg["hydra"]
    return cfg


_exported: dict[str, Path] = {}


def make_checkpoint(
    path: Path, width: int = 8, blocks: int = 1, seed: int = 0, stages: int = 2, styles: int = 1
) -> Path:
    """A checkpoint shaped like train.py's (Lightning keys and config) with random weights; with
    `styles` 2, of The Starry Night and The Great Wave, their norms' scales and shifts apart."""
    torch.manual_seed(seed)
    network = TransformerNet(width, blocks, stages, styles)
    for norm in network.norms() if styles > 1 else []:
        torch.nn.init.normal_(norm.weight, 1.0, 0.5)
        torch.nn.init.normal_(norm.bias, 0.0, 0.5)
    config = {
        "network": {
            "_target_": "stylenet.training.network.TransformerNet",
            "width": width,
            "num_res_blocks": blocks,
            "stages": stages,
        },
        "style": {"name": "mosaic", "image": str(MOSAIC), "size": 512, "painting": "Mosaic"},
        "data": {"image_size": 256, "root": str(PHOTO_DIR / "train")},
        "command": "python train.py style=mosaic",
    }
    if styles > 1:
        config["network"]["styles"] = styles
        config["styles"] = [
            {"name": "starry_night", "image": str(STYLES / "starry_night.jpg"),
             "painting": "The Starry Night", "artist": "Vincent van Gogh", "year": "1889",
             "licence": "public domain"},
            {"name": "wave", "image": str(STYLES / "wave.jpg"),
             "painting": "The Great Wave off Kanagawa", "artist": "Katsushika Hokusai",
             "year": "c. 1831", "licence": "public domain"},
        ][:styles]  # fmt: skip
        config["command"] = "python train.py styles=[starry_night,wave]"
    torch.save(
        {
            "state_dict": {f"network.{k}": v for k, v in network.state_dict().items()},
            "hyper_parameters": {"config": config},
            "global_step": 1234,
            "callbacks": {"TrainingClock": {"seconds": {"Test CPU (2 threads)": 5400.0}}},
        },
        path,
    )
    return path


def run_export(*overrides: str) -> None:
    """export.py's task, in this process, with its Hydra config and these overrides."""
    from stylenet.training.export import export_task

    export_task(compose("export", list(overrides)))


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


# (width, stages, input size) of the networks computed against their declared layers: training's
# form in test_network, export's in test_export.
NETWORKS = [(4, 2, (13, 22)), (4, 1, (8, 8)), (4, 3, (17, 9)), (16, 2, (9, 9))]
UPSAMPLED_SIZES = [(2, 2), (5, 9), (12, 8)]


def assert_computes_upsample_conv(
    upsample_conv: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    layer_form: Callable[[UpsampleConv, torch.Tensor], torch.Tensor],
    size: tuple[int, int],
) -> None:
    """`upsample_conv(x, weight, bias)` equals upsample, reflection pad and 3x3 conv (values,
    gradients), and `layer_form(layer, x)` the UpsampleConv's declared layers."""
    torch.manual_seed(0)
    layer = UpsampleConv(6, 4).double()
    upsample, conv = layer[0], layer[1][0]  # nn.Upsample, ConvLayer (reflection pad + conv)
    x = torch.rand(2, 6, *size, dtype=torch.float64, requires_grad=True)
    weight, bias = conv[1].weight, conv[1].bias
    fused, plain = upsample_conv(x, weight, bias), conv(upsample(x))
    assert fused.shape == plain.shape == (2, 4, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(fused, plain)
    target = torch.rand_like(plain)  # an uneven weighting, so every output pixel matters
    grads = [torch.autograd.grad((y * target).sum(), (x, weight, bias)) for y in (fused, plain)]
    for fused_grad, plain_grad in zip(*grads, strict=True):
        torch.testing.assert_close(fused_grad, plain_grad)
    torch.testing.assert_close(layer_form(layer, x), layer.declared(x))


def assert_computes_the_declared_network(
    form: Callable[[TransformerNet], nn.Module],
    width: int,
    stages: int,
    size: tuple[int, int],
) -> None:
    """`form(network)` against the layers as written (`TransformerNet.declared`): values,
    gradients and the statistics that tiled inference shares (`forward_shared`)."""
    torch.manual_seed(0)
    network = TransformerNet(width, num_res_blocks=1, stages=stages).double()
    for norm in network.norms():  # not the initial (1, 0): every parameter must matter
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    stats = torch.zeros(1, 2 * sum(network.norm_channels()), dtype=torch.float64)
    no = torch.tensor(False)
    target = torch.rand(2, 3, *size, dtype=torch.float64)

    def run(forward_shared: Callable) -> list[torch.Tensor]:
        out, measured = forward_shared(x, stats, no, no)
        return [out, measured, *torch.autograd.grad((out * target).sum(), network.parameters())]

    declared = run(partial(network.forward_shared, compute=network.declared))
    for got, expected in zip(run(form(network).forward_shared), declared, strict=True):
        torch.testing.assert_close(got, expected)
