"""A small MNIST CNN (input [N, 1, 28, 28] in [0, 1], 10 classes) for the recovery benchmark and examples.

    p2d compile prune2deploy.examples.mnist_cnn:build --weights mnist_cnn.pt --input-shape 1,1,28,28 \\
        --data mnist_train.pt --val-data mnist_test.pt

(or `path/to/prune2deploy/examples/mnist_cnn.py:build`). `train` fits it on arrays, for the benchmarks.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class MnistCNN(nn.Module):
    """Three conv-BN-ReLU stages (32, 64, 128 channels) with 2x2 pooling, then a linear classifier."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(*_conv(1, width), nn.MaxPool2d(2),
                                      *_conv(width, 2 * width), nn.MaxPool2d(2),
                                      *_conv(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def build() -> nn.Module:
    """A seeded, untrained MnistCNN in eval mode (load trained weights with --weights)."""
    torch.manual_seed(0)
    return MnistCNN().eval()


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 1, lr: float = 1e-3,
          batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Plain supervised training (AdamW, one-cycle LR, cross-entropy), seeded; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Percent of `labels` the model's argmax gets right."""
    with torch.no_grad():
        correct = sum(int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                      for i in range(0, len(images), batch_size))
    return 100.0 * correct / len(images)


def main(argv: list[str] | None = None) -> None:
    """`python -m prune2deploy.examples.mnist_cnn TRAIN.pt OUT.pt`: train on a {"inputs", "labels"} file (e.g.
    benchmarks/real_data.py's mnist_train.pt) and save the weights for `--weights`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    data = torch.load(args.train, weights_only=True)
    model = train(build(), data["inputs"], data["labels"], epochs=args.epochs)
    torch.save(model.state_dict(), args.out)
    print(f"trained on {len(data['labels'])} samples of {args.train} ({args.epochs} epoch): wrote {args.out}")


if __name__ == "__main__":
    main()
