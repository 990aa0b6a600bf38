"""A data set before batching, and one batch: what every data form (files, images, text, callables) produces."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from prune2deploy.context import ExampleInputs


Batch = tuple[ExampleInputs, "torch.Tensor | None"]


@dataclass
class Samples:
    """A data set before batching: `take(indices)` gives those samples as one batch.

    unit "sample": indices are samples. unit "batch": the source's batches could not be stacked (their
    shapes differ), so each index is one of its batches, split and shuffled whole.
    """

    n: int
    take: Callable[[Sequence[int]], Batch]
    unit: str = "sample"
    lengths: Sequence[int] | None = None  # tokens per sample (text): batches group similar lengths


def stacked(inputs: ExampleInputs, labels: torch.Tensor | None) -> Samples:
    """Samples backed by tensors whose dim 0 is the sample axis."""
    def take(idx):
        index = torch.as_tensor(list(idx), dtype=torch.long)
        return inputs.like([t[index] for t in inputs.tensors()]), labels[index] if labels is not None else None
    return Samples(int(inputs.tensors()[0].shape[0]), take)
