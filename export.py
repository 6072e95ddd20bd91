"""Export a checkpoint to ONNX:  python export.py ckpt=PATH output=wave.onnx [key=value ...]

See stylenet/training/export.py and stylenet/configs/export.yaml; installed, the same command is
`stylenet-export`.
"""

from stylenet.training.export import main

if __name__ == "__main__":
    main()
