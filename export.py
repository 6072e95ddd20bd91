"""Export a checkpoint to ONNX: python export.py ckpt=PATH output=mosaic.onnx [key=value ...].

The settings live in configs/export.yaml. The file is written only when onnxruntime reproduces
PyTorch within `tolerance`, and never over an existing file unless overwrite=true.
"""

import logging
import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from stylenet.errors import StylenetError
from stylenet.export import export_checkpoint

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    for chatty in ("onnxscript", "onnx_ir"):  # their graph optimisers log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        report = export_checkpoint(
            ckpt=cfg.ckpt,
            output=cfg.output,
            overwrite=cfg.overwrite,
            opset=cfg.opset,
            tolerance=cfg.tolerance,
            sizes=[tuple(size) for size in cfg.parity_sizes],
        )
    except (StylenetError, OmegaConfBaseException) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    meta = report.metadata
    log.info(
        "wrote %s: style %s, %s training steps, width %s, %s residual blocks; "
        "max |onnxruntime - PyTorch| = %.1e",
        report.output,
        meta["style_name"],
        meta["training_steps"],
        meta["network_width"],
        meta["network_num_res_blocks"],
        report.max_difference,
    )


if __name__ == "__main__":
    main()
