"""Small real architectures for end-to-end tests (also usable as `tests/models.py:NAME` on the CLI)."""
from __future__ import annotations

import torch
import torch.nn as nn

from prune2deploy.examples import SmallResNet


def _seeded(model: nn.Module) -> nn.Module:
    """Non-uniform BN scales so magnitude criteria have something to rank."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.weight.uniform_(0.05, 1.0)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def resnet_like() -> nn.Module:
    """ResNet-style CNN with residual adds and projection shortcuts (input 1x3x32x32)."""
    torch.manual_seed(0)
    return _seeded(SmallResNet(num_classes=10, width=16))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block with a depthwise conv and an SE block; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            SqueezeExcite(hidden, max(8, hidden // 4)),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetLike(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1),
                                    InvertedResidual(24, 32, 2), InvertedResidual(32, 32, 1),
                                    nn.Conv2d(32, 64, 3, 1, 1, groups=4, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def mobilenet_like() -> nn.Module:
    """MobileNet-style net: depthwise and grouped convs, SE blocks (input 1x3x32x32)."""
    torch.manual_seed(0)
    return _seeded(MobileNetLike())


class TransformerClassifier(nn.Module):
    """A token classifier on nn.TransformerEncoder (multi-head attention), input int64 [1, 16]."""

    def __init__(self, vocab: int = 100, d_model: int = 64, heads: int = 8, layers: int = 2, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def transformer_like() -> nn.Module:
    torch.manual_seed(0)
    return TransformerClassifier().eval()


class _StallsWhenTraced(nn.Module):
    """Runs normally without autograd, but stalls (or hogs memory) when traced with gradients, as
    torch-pruning's dependency graph does: a stand-in for architectures whose graph build explodes."""

    def __init__(self, hog_bytes: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 4)
        self.hog_bytes = hog_bytes

    def forward(self, x):
        if torch.is_grad_enabled():
            import time

            hog = torch.ones(self.hog_bytes // 4) if self.hog_bytes else None
            time.sleep(60)
            del hog
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def stalls_in_pruning() -> nn.Module:
    return _StallsWhenTraced().eval()


def hogs_memory_in_pruning() -> nn.Module:
    return _StallsWhenTraced(hog_bytes=3 * 1024**3).eval()


def mlp_like() -> nn.Module:
    """An MLP whose hidden layers are eligible for 2:4 (widths multiples of 16), input [N, 64]."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


class _BusyWhenTraced(nn.Module):
    """Runs normally without autograd; when traced with gradients it spins in Python (as torch-pruning's
    group walk does on Swin), so a budget can interrupt it. No block of two layers to prune on its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        if torch.is_grad_enabled():
            import time

            start = time.monotonic()
            while time.monotonic() - start < 120:
                pass
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def busy_when_traced() -> nn.Module:
    return _BusyWhenTraced().eval()
class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits (input [N, 1, 8, 8] in [0, 1], 10 classes)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.classifier = nn.Linear(256, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return DigitsCNN().eval()


class _OddAdaptivePool(nn.Module):
    """Adaptive pooling to 3x3 from a 4x4 map: ONNX (torchscript exporter) cannot express it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(16 * 9, 4)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def odd_adaptive_pool() -> nn.Module:
    torch.manual_seed(0)
    return _OddAdaptivePool().eval()


class TwoPaths(nn.Module):
    """fragile: every channel carries the output (large weights downstream); free: its channels are nearly unused
    (the layer after it reads them with weights 1000x smaller)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fragile = nn.Conv2d(3, 16, 3, padding=1)
        self.free = nn.Conv2d(3, 16, 3, padding=1)
        self.read_fragile = nn.Conv2d(16, 8, 1)
        self.read_free = nn.Conv2d(16, 8, 1)
        with torch.no_grad():
            self.read_free.weight.mul_(1e-3)

    def forward(self, x):
        y = self.read_fragile(torch.relu(self.fragile(x))) + self.read_free(torch.relu(self.free(x)))
        return y.flatten(1)


def two_paths() -> nn.Module:
    """Sensitivity tests: one group carries the output, the other is nearly unused."""
    return TwoPaths().eval()
