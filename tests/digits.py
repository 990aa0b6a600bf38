"""scikit-learn's digits (1,797 real 8x8 handwritten digits): a small real learnable task for data/metric tests."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images [1797, 1, 8, 8] float32 in [0, 1], labels int64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0, torch.tensor(d.target)


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict:
    images, labels = digits()
    model = _digits_cnn().train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        order = torch.randperm(1500, generator=g)
        for i in range(0, 1500, 64):
            idx = order[i:i + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_digits_cnn() -> nn.Module:
    """DigitsCNN trained for 4 epochs on the first 1,500 digits (about 90% on the other 297; seconds on CPU)."""
    model = _digits_cnn()
    model.load_state_dict(_trained_state())
    return model.eval()


def _digits_cnn() -> nn.Module:
    """From the `models` module loaded now: CLI tests load tests/models.py by path, which replaces it, and a
    pruned model pickles (pruned.pt) only if its class is the one sys.modules["models"] holds."""
    import models

    return models.digits_cnn()
