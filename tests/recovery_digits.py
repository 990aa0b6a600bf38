"""Recovery tests on scikit-learn's digits (digits.py loads them): a three-conv BatchNorm CNN trained to ~99.8%
on a seeded 75% split in a few seconds (cached per process), batching and top-1 helpers."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs


class DeepDigitsCNN(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def digits_tensors():
    """(train_x, train_y, val_x, val_y): a seeded 75/25 split of the 1797 digits, scaled to [0, 1]."""
    from digits import digits  # here, not at the top: p2d loads this file as `file.py:DeepDigitsCNN`

    x, y = digits()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    cut = int(0.75 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def batches(x, y, size: int = 64) -> list:
    return [(ExampleInputs((x[i:i + size],), {}), y[i:i + size]) for i in range(0, len(y), size)]


def top1(model, batch_list) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in batch_list:
            correct += int((inputs.call(model).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * correct / total


@functools.lru_cache(maxsize=1)
def _trained_state():
    torch.manual_seed(0)
    model = DeepDigitsCNN()
    tx, ty, _, _ = digits_tensors()
    train = batches(tx, ty)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        model.train()
        for inputs, labels in train:
            opt.zero_grad()
            nn.functional.cross_entropy(inputs.call(model), labels).backward()
            opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_deep_digits_cnn() -> nn.Module:
    """A trained DeepDigitsCNN (99.8% top-1 on the held-out quarter)."""
    model = DeepDigitsCNN()
    model.load_state_dict(_trained_state())
    return model.eval()
