"""The trained 1.13 M-parameter CNN that the codec benchmarks share (rdoq.py,
nncodec_compare.py): conv 1→64→128 (3x3), max-pool to 4x4, linear 2048→512→10,
trained on digits (8x8 images) with p2pfl's own trainer."""

from __future__ import annotations

import torch
from torch import nn


def big_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(4), nn.Flatten(),
                         nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 10))


def trained_cnn(epochs: int = 3):
    """(model, dataset): the CNN after ``epochs`` epochs of SGD on digits."""
    from p2pfl.data import load_dataset
    from p2pfl.training import LocalTrainer, SGDConfig

    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=0)
    model = big_cnn()
    cfg = SGDConfig(lr=0.02, momentum=0.9, batch_size=32, local_steps=0, local_epochs=epochs)
    LocalTrainer(model, ds.x_train, ds.y_train, cfg, seed=0).train()
    return model, ds
