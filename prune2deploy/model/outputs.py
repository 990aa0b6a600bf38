"""Flatten whatever a model returns (tensor, tuple, dict, transformers ModelOutput) into named tensors."""
from __future__ import annotations

import torch


def flatten_outputs(out, prefix: str = "output") -> list[tuple[str, torch.Tensor]]:
    """Named tensors in the order torch.onnx.export writes the graph outputs."""
    if isinstance(out, torch.Tensor):
        return [(prefix, out)]
    if isinstance(out, dict):  # includes transformers' ModelOutput
        items = [(str(k), v) for k, v in out.items() if v is not None]
    elif isinstance(out, (tuple, list)):
        items = [(f"{prefix}_{i}", v) for i, v in enumerate(out)]
    else:
        return []
    flat = []
    for name, value in items:
        flat.extend(flatten_outputs(value, name))
    return flat


def output_shapes(out) -> dict[str, list[int]]:
    return {n: list(t.shape) for n, t in flatten_outputs(out)}
