"""The whole path a user takes: train.py checkpoint -> export -> torch-free Stylizer."""

import hashlib

import numpy as np
import onnx
import torch
from PIL import Image

from helpers import PHOTO_DIR, STYLES, compose_train
from stylenet.runtime.stylizer import Stylizer
from stylenet.training.data import to_tensor
from stylenet.training.export import export_checkpoint, load_checkpoint
from stylenet.training.train import train


def test_trained_checkpoint_exports_and_stylizes(tmp_path, photo_folder):
    run = tmp_path / "run"
    train(compose_train(run, "style=wave", f"data.root={photo_folder}", "trainer.max_steps=3"))
    ckpt = run / "checkpoints" / "last.ckpt"
    model = tmp_path / "wave.onnx"
    export_checkpoint(ckpt, model)

    meta = {p.key: p.value for p in onnx.load(model).metadata_props}
    assert meta["style_name"] == "wave" and meta["training_steps"] == "3"
    sha = hashlib.sha256((STYLES / "wave.jpg").read_bytes()).hexdigest()
    assert meta["style_image_sha256"] == sha  # recorded at training time

    photo = Image.open(sorted((PHOTO_DIR / "val").glob("*.jpg"))[0]).convert("RGB")
    stylized = Stylizer(model).stylize(photo)
    assert stylized.size == photo.size and stylized.mode == "RGB"

    network = load_checkpoint(ckpt).network
    with torch.no_grad():
        expected = network(to_tensor(photo)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    difference = np.abs(np.asarray(stylized, dtype=np.float64) - expected)
    assert difference.max() <= 1.0  # rounding to 8 bits, nothing more
    assert np.abs(np.asarray(stylized, dtype=np.float64) - np.asarray(photo)).mean() > 5
