"""Train a feed-forward style network:  python train.py style=wave [key=value ...]

The training lives in stylenet/training/ and its settings in stylenet/configs/; installed, the
same command is `stylenet-train`.
"""

from stylenet.training.train import main

if __name__ == "__main__":
    main()
