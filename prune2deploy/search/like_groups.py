"""Groups that are the same layer configuration share one measured row of the cost table.

NetAdapt's latency look-up table is keyed by layer configuration: identical layers at identical input shapes
take the same time, so a stack of like blocks (a transformer's encoder layers, a ResNet stage's repeated
bottlenecks, MobileNetV2's repeated inverted residuals) needs one measurement per configuration, not per block.
A group's configuration: its kind, dense width and step, its path inside its block (the first repeated
container element on its name, e.g. `encoder.layer.3` for `encoder.layer.3.intermediate.dense`), the block's
structure (`repr`) and the shapes of the block's inputs in the example forward pass. A group whose root is not
strictly inside a numbered block (`features.4`, `fc1`: what it feeds lies outside anything compared), whose block
is not found, or whose block's inputs were not seen, is its own configuration.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prune2deploy.passes.block_local import capture_block_inputs
from prune2deploy.search.groups import HEADS, Group


def block_of(name: str) -> tuple[str, str]:
    """(block path, path inside the block): the block is the name up to its first numeric part."""
    parts = name.removesuffix(HEADS).split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1]), ".".join(parts[i + 1:])
    return name, ""


def _shapes(value) -> tuple:
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return tuple(_shapes(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _shapes(v)) for k, v in sorted(value.items()))
    return (type(value).__name__,)


def block_inputs(model: nn.Module, inputs, blocks: set[str]) -> dict[str, tuple]:
    """The input shapes each named block sees in one forward pass on the example inputs."""
    modules = {name: m for name, m in model.named_modules() if name in blocks}
    seen = capture_block_inputs(model, inputs, list(modules.values()))
    return {name: (_shapes(seen[id(m)][0]), _shapes(seen[id(m)][1])) for name, m in modules.items() if id(m) in seen}


def representatives(model: nn.Module, inputs, groups: list[Group]) -> dict[str, str]:
    """{group name: name of the first group with the same configuration} (itself when it is the first)."""
    modules = dict(model.named_modules())
    blocks = {g.name: block_of(g.name) for g in groups}
    seen = block_inputs(model, inputs, {b for b, _ in blocks.values()})
    first: dict[tuple, str] = {}
    out = {}
    for g in groups:
        block, inside = blocks[g.name]
        if not inside or block not in modules or block not in seen:
            out[g.name] = g.name
            continue
        key = (g.kind, g.width, g.step, inside, repr(modules[block]), seen[block])
        out[g.name] = first.setdefault(key, g.name)
    return out
