"""Block-local pruning: prune inside each residual/transformer block on its own, tracing the block alone.

Used when the whole model's dependency graph is too costly (Swin, MaxViT: window reshapes) or cannot be
built (ShuffleNet: a channel shuffle outside any module). Each block is traced with the inputs it gets in
the real model; the layers that produce its outputs keep their width, so only what never leaves the block
shrinks (MLP hidden width, attention heads, a bottleneck's inner convs), never the residual stream.
A block whose pruning fails or changes its output is restored and its sub-blocks are tried instead;
a block with nothing left to try is reported as skipped, with the reason.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from prune2deploy.model.outputs import output_shapes
from prune2deploy.passes.degrade import Snapshot, first_line
from prune2deploy.passes.graph_budget import GraphBudget, GraphTooCostly

PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def prunable_count(m: nn.Module) -> int:
    return sum(isinstance(x, PRUNABLE) for x in m.modules())


def is_block(m: nn.Module) -> bool:
    """Has two prunable layers or more, and is not a plain container of such modules (that one is descended)."""
    if prunable_count(m) < 2:
        return False
    if type(m) in CONTAINERS:
        return all(prunable_count(c) < 2 for c in m.children())
    return True


def capture_block_inputs(model: nn.Module, inputs, modules: list[nn.Module]) -> dict[int, tuple]:
    """(args, kwargs) of each module's first call while `model` runs on `inputs`."""
    seen: dict[int, tuple] = {}

    def hook(mod, args, kwargs):
        seen.setdefault(id(mod), (args, kwargs))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    try:
        with torch.no_grad():
            inputs.call(model)
    finally:
        for h in handles:
            h.remove()
    return seen


PruneOne = Callable[[nn.Module, tuple, dict], None]  # prunes (block, its args, its kwargs) in place


def prune_blocks(model: nn.Module, inputs, prune_one: PruneOne, budget_s: float, budget_gb: float,
                 held: dict[int, str] | None = None) -> dict:
    """Prune every block of `model` with `prune_one`, each under its own graph budget; returns the record.

    The first block of a type that runs past the budget sends every block of that type to its parts.
    `held` (id(module) -> why) are modules to leave whole (attention whose heads stay): they are reported
    as skipped and never traced, and a block holding one is pruned by its other parts.
    """
    held = held or {}
    holders = _holders(model, held)
    names = {id(m): n for n, m in model.named_modules()}
    calls = capture_block_inputs(model, inputs, [m for m in model.modules() if prunable_count(m) >= 2])
    done, skipped, split = [], [], []  # split: blocks pruned by their parts instead, and why
    costly: dict[type, str] = {}  # a block type whose graph ran past the budget: its likes go straight to parts

    def visit(module: nn.Module, is_root: bool) -> None:
        name = names.get(id(module), "")
        if id(module) in held:
            skipped.append({"group": name, "reason": held[id(module)]})
            return
        if not is_root and is_block(module) and id(module) not in holders:
            if type(module) in costly:
                reason = costly[type(module)]
            else:
                reason, too_costly = _try_block(module, calls.get(id(module)), prune_one, budget_s, budget_gb)
                if too_costly:
                    costly[type(module)] = f"{reason} (for {name}, a block of the same type)"
            if reason is None:
                done.append(name)
                return
            if not any(prunable_count(c) >= 2 for c in module.children()):
                skipped.append({"group": name, "reason": reason})
                return
            split.append({"block": name, "reason": reason})
        for child in module.children():
            visit(child, False)

    visit(model, True)
    return {"blocks": done, "skipped": skipped, "split": split}


def _holders(model: nn.Module, held: dict) -> set[int]:
    return {id(m) for m in model.modules() if any(id(x) in held for x in m.modules())}


def first_blocks(model: nn.Module, held: dict[int, str] | None = None) -> dict:
    """What block-local pruning traces first, without tracing: {"blocks": names, "held": [{group, reason}]}.

    A block that runs past its budget or breaks is then split into its parts (not predicted here).
    """
    held = held or {}
    holders, names = _holders(model, held), {id(m): n for n, m in model.named_modules()}
    blocks, kept = [], []

    def visit(module: nn.Module, is_root: bool) -> None:
        if id(module) in held:
            kept.append({"group": names[id(module)], "reason": held[id(module)]})
        elif not is_root and is_block(module) and id(module) not in holders:
            blocks.append(names[id(module)])
        else:
            for child in module.children():
                visit(child, False)

    visit(model, True)
    return {"blocks": blocks, "held": kept}


def _try_block(block, call, prune_one, budget_s, budget_gb) -> tuple[str | None, bool]:
    """Prune one block in place; on failure restore it exactly. Returns (why it failed, over budget?)."""
    if call is None:
        return "not called in the forward pass with the example inputs", False
    args, kwargs = call
    if kwargs and args:
        return "takes positional and keyword inputs together; trace it by its sub-blocks", False
    snapshot = Snapshot(block)
    try:
        with torch.no_grad():
            before = output_shapes(block(*args, **kwargs))
        with GraphBudget(budget_s, budget_gb, "the block's dependency graph"):
            prune_one(block, args, kwargs)
        with torch.no_grad():
            after = output_shapes(block(*args, **kwargs))
        reason = None if after == before else f"pruning changed the block's output shapes {before} -> {after}"
    except GraphTooCostly as exc:
        snapshot.restore()
        return str(exc), True
    except Exception as exc:
        reason = first_line(exc)
    if reason is not None:
        snapshot.restore()
    return reason, False
