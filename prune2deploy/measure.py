"""Model size facts: parameters and multiply-accumulates, counted by torch-pruning's op counter."""
from __future__ import annotations

import contextlib
import io

import torch
import torch.nn as nn
import torch_pruning as tp


def count_macs_params(model: nn.Module, inputs) -> tuple[int, int]:
    """(MACs, params) for one forward pass on `inputs` (ExampleInputs)."""
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # it prints about keyword inputs
        macs, params = tp.utils.count_ops_and_params(model, inputs.kwargs or inputs.args)
    return int(macs), int(params)
