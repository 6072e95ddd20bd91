"""Static int8 quantisation of an exported model, calibrated on photos (`stylenet quantize`).

onnxruntime.quantization needs the `onnx` package (the [quantize] extra, also in [train]): the CLI
imports this module only when the command runs, and says what to install when `onnx` is missing.
"""

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from stylenet.errors import StylenetError
from stylenet.runtime.images import find_images, load_image, write_atomically
from stylenet.runtime.stylizer import INPUT_NAME, STYLE_WEIGHTS_NAME, Stylizer

# Calibration photos are shrunk to this longer side: the ranges are those of normalised
# activations, and larger photos only make calibration slower.
CALIBRATION_SIZE = 512


class _Photos(CalibrationDataReader):
    """The calibration photos, one at a time, as the model's input; for a model of several
    `styles`, each photo in the next style in turn, so that every style's ranges are measured."""

    def __init__(self, photos: list[np.ndarray], styles: int = 1):
        self.photos = enumerate(photos)
        self.styles = styles

    def get_next(self) -> dict[str, np.ndarray] | None:
        index, rgb = next(self.photos, (0, None))
        if rgb is None:
            return None
        feeds = {INPUT_NAME: rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255}
        if self.styles > 1:
            feeds[STYLE_WEIGHTS_NAME] = np.eye(self.styles, dtype=np.float32)[[index % self.styles]]
        return feeds


def calibration_photos(folder: Path, count: int) -> list[np.ndarray]:
    """Up to `count` readable photos spread evenly over `folder` (searched recursively)."""
    if not folder.is_dir():
        raise StylenetError(f"calibration folder not found: {folder}")
    files = find_images(folder)
    photos = []
    for index in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int):
        try:
            photos.append(load_image(files[index], CALIBRATION_SIZE).rgb)
        except StylenetError:  # a corrupt file in a photo folder: calibrate on the others
            continue
    if not photos:
        raise StylenetError(f"no readable photos in {folder}")
    return photos


def quantize_model(
    model: Path, calibration: Path, output: Path, count: int = 32, overwrite: bool = False
) -> int:
    """Write an int8 copy of `model` to `output`; returns how many photos calibrated it.

    Static QDQ quantisation of the convolutions: int8 weights per output channel, uint8
    activations with ranges measured (min-max) on the photos; instance norms, residual sums and
    the first and last convolutions (3 channels: nothing to gain) stay float. Weights use 7 of
    the 8 bits (`reduce_range`), which CPUs without VNNI (AVX2 only) need to avoid overflowing
    their 16-bit intermediate sums; on this VNNI machine it made no measurable difference.
    """
    if output.exists() and not overwrite:
        raise StylenetError(f"{output} exists (--overwrite to replace it)")
    styles = len(Stylizer(model).style_names)  # one-line errors for what is not a stylenet model
    photos = calibration_photos(calibration, count)
    proto = onnx.load(model)
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    # The quantizer advises pre-processing, which fails on the dynamic padding and gained nothing.
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as folder:
            quantized = Path(folder) / "int8.onnx"
            quantize_static(
                model,
                quantized,
                _Photos(photos, styles),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=[convs[0], convs[-1]],
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            result = onnx.load(quantized)
    finally:
        logging.disable(logging.NOTSET)
    note = f"int8 (static QDQ convolutions), calibrated on {len(photos)} photos"
    onnx.helper.set_model_props(
        result, {p.key: p.value for p in proto.metadata_props} | {"quantization": note}
    )
    data = result.SerializeToString()
    write_atomically(output, lambda tmp: tmp.write_bytes(data), overwrite)
    return len(photos)
