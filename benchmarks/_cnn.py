"""Trained CNNs that the codec benchmarks share (rdoq.py, nncodec_compare.py).

- ``big``: 1.13 M parameters, conv 1→64→128 (3x3), max-pool to 4x4, linear
  2048→512→10, trained on digits (8x8 images) with p2pfl's own SGD trainer.
- ``fc4096``: issue 11's shape, 1.07 M parameters, conv 1→32→64 (3x3, no
  pooling), linear 4096→256→10, trained on digits with Adam.  Adam gives the
  rows of the 256 x 4096 layer scales and sign balances of their own, the
  statistics that change within a tensor.
"""

from __future__ import annotations

import numpy as np
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


def fc4096_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 10))


def trained_fc4096(epochs: int = 10):
    """(model, dataset): ``fc4096_cnn`` after ``epochs`` epochs of Adam (lr 1e-3,
    batch 32) on digits."""
    from p2pfl.data import load_dataset

    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=0)
    model = fc4096_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model, ds


def trained(model: str, epochs: int | None = None):
    """(model, dataset) of ``big`` (default 3 epochs) or ``fc4096`` (default 10)."""
    if model == "big":
        return trained_cnn(epochs or 3)
    return trained_fc4096(epochs or 10)


def kernels(model: nn.Module) -> dict:
    """The conv and linear kernels as float32 arrays, named without dots (biases,
    which NNCodec codes at another step, are left out)."""
    return {n.replace(".", "_"): p.detach().numpy().astype(np.float32)
            for n, p in model.named_parameters() if p.dim() >= 2}
