"""The training side (the [train] extra): the network, its perceptual loss, the Lightning module,
Hydra entry points (train, export, optimize) and the quality metrics. Needs PyTorch."""
