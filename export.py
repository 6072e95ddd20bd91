"""Export a checkpoint to ONNX: python export.py ckpt=PATH output=mosaic.onnx [key=value ...].

The settings live in configs/export.yaml. The file is written only when onnxruntime reproduces
PyTorch within `tolerance`, and never over an existing file unless overwrite=true.
"""

import logging

from omegaconf import DictConfig

from stylenet.app import hydra_app
from stylenet.export import export_checkpoint

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> None:
    """Export cfg.ckpt to cfg.output and log what was written."""
    for chatty in ("onnxscript", "onnx_ir"):  # their graph optimisers log every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    report = export_checkpoint(
        ckpt=cfg.ckpt,
        output=cfg.output,
        overwrite=cfg.overwrite,
        opset=cfg.opset,
        tolerance=cfg.tolerance,
        sizes=[tuple(size) for size in cfg.parity_sizes],
    )
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


main = hydra_app("export")(export)

if __name__ == "__main__":
    main()
