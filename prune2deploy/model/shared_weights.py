"""Copies of a model that share its weights: to count its MACs, and to prune it until the copy needs its own.

torch-pruning never writes into a weight: it replaces each pruned one with a new, smaller tensor. A copy whose
parameters and buffers are new tensors on the dense model's storage therefore takes memory only for what pruning
makes; a full deep copy took a second set of FP32 weights (1.2 GB for ViT-L/16) and the time to fill it. What
writes in place (training, BatchNorm re-estimation, 2:4 masking) must come after `unshare`.
"""
from __future__ import annotations

import copy
import itertools

import torch
import torch.nn as nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers are new tensors on `model`'s storage (ties kept)."""
    memo = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        memo[id(t)] = nn.Parameter(t.detach(), requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) \
            else t.detach()
    return copy.deepcopy(model, memo)


def unshare(pruned: nn.Module, dense: nn.Module) -> int:
    """Give every tensor of `pruned` still on `dense`'s storage its own copy, so that writing into `pruned`
    leaves `dense` as it was. Returns the bytes copied (the weights pruning left as they were)."""
    storages = {_storage(t) for t in itertools.chain(dense.parameters(), dense.buffers())}
    copied = 0
    for module in pruned.modules():
        for t in itertools.chain(module._parameters.values(), module._buffers.values()):
            if t is not None and _storage(t) in storages:  # a tied tensor is copied once: set in place
                t.data = t.data.clone()
                copied += t.numel() * t.element_size()
    return copied


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()
