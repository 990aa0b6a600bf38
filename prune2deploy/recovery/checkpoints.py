"""What a recovery checkpoint holds, for `--resume` after a kill -9 (where it is kept: artifacts/checkpoints.py).

A checkpoint holds plain tensors and numbers only (loaded with weights_only=True): the pruned network's
structure (every parameter's shape and the modules' numeric attributes: widths, head counts) and its weights,
the optimiser, schedule and RNG states, and the curve so far. Resuming rebuilds the pruned structure on a copy
of the dense model, so nothing in the file is ever executed.
"""
from __future__ import annotations

import torch.nn as nn

_SIMPLE = (int, float, bool, str)


def _simple(value) -> bool:
    if isinstance(value, _SIMPLE) or value is None:
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value)


def structure(model: nn.Module) -> dict:
    """Shapes of every parameter and buffer, and the numeric attributes of every module (widths, heads)."""
    shapes = {n: list(t.shape) for n, t in model.state_dict().items()}
    attrs = {name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(m).items()
                    if _simple(v) and k != "training"}
             for name, m in model.named_modules()}
    return {"shapes": shapes, "attrs": attrs}


def rebuild(model: nn.Module, saved: dict) -> nn.Module:
    """Give `model` (a copy of the dense model, or a pruned one) the saved structure, in place."""
    modules = dict(model.named_modules())
    for full, shape in saved["shapes"].items():
        owner, _, leaf = full.rpartition(".")
        m = modules.get(owner)
        if m is None:
            continue
        if leaf in m._parameters and m._parameters[leaf] is not None:
            old = m._parameters[leaf]
            if list(old.shape) != shape:
                m._parameters[leaf] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
        elif leaf in m._buffers and m._buffers[leaf] is not None and list(m._buffers[leaf].shape) != shape:
            m._buffers[leaf] = m._buffers[leaf].new_empty(shape)
    for name, values in saved["attrs"].items():
        m = modules.get(name)
        for k, v in (values.items() if m is not None else ()):
            current = getattr(m, k, None)
            setattr(m, k, tuple(v) if isinstance(current, tuple) and isinstance(v, list) else v)
    return model
