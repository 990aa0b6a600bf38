"""Input-channel permutation that raises the magnitude an N:M mask keeps (like apex ASP).

Permuting a producer's output channels, its consumers' input channels and everything in
between (BatchNorm, unary activations, pooling, biases) leaves the network's function
unchanged, but regroups the consumer's input channels so big weights stop competing
inside one group of M. torch-pruning's DependencyGraph finds what carries the channels.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import ops

from prune2deploy.passes.nm import kept_fraction

# autograd ops that act on each channel independently (names without "BackwardN").
CHANNELWISE_OPS = {
    "Relu", "Gelu", "Silu", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid", "Hardtanh",
    "LeakyRelu", "Elu", "Clamp", "ClampMin", "Mish", "Softplus", "Clone", "ToCopy", "NativeDropout",
    "MaxPool2DWithIndices", "AvgPool2D", "AdaptiveAvgPool2D", "AdaptiveMaxPool2D", "Mean",
}


@dataclass
class ChannelGroup:
    """One producer's output channels and every layer that carries them."""

    producer: str
    channels: int
    outs: list[nn.Module] = field(default_factory=list)  # Conv/Linear whose weight dim 0 carries them
    ins: list[nn.Module] = field(default_factory=list)  # Conv/Linear whose weight dim 1 reads them
    norms: list[nn.Module] = field(default_factory=list)  # BatchNorm carrying them
    consumers: list[str] = field(default_factory=list)
    reason: str | None = None  # why this group cannot be permuted


def _op_name(node) -> str:
    return re.sub(r"Backward\d*$", "", type(node.grad_fn).__name__) if node.grad_fn is not None else "?"


def _blocker(dg, item, n: int) -> str | None:
    """Why this group member stops a permutation (None when we know how to permute it)."""
    dep, node, module = item.dep, item.dep.target, item.dep.target.module
    if list(item.idxs) != list(range(n)) or list(item.root_idxs) != list(range(n)):
        return f"channels are reshaped/concatenated/sliced on the way to {node.name}"
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return f"grouped/depthwise conv {node.name} carries the channels"
        dim = 0 if dg.is_out_channel_pruning_fn(dep.handler) else 1
        return None if module.weight.shape[dim] == n else f"{node.name} does not carry all {n} channels"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return None if module.num_features == n else f"{node.name} does not carry all {n} channels"
    if node.type == ops.OPTYPE.ELEMENTWISE:
        op = _op_name(node)
        if op in CHANNELWISE_OPS or (op == "T" and isinstance(dep.source.module, nn.Linear)):
            return None  # "T": the transpose of a Linear's own weight inside addmm
        return f"op {op} mixes these channels with another tensor (e.g. a residual add)"
    if node.type == ops.OPTYPE.RESHAPE:
        return None  # identity index mapping was checked above
    if node.type in (ops.OPTYPE.LN, ops.OPTYPE.GN, ops.OPTYPE.IN):
        return f"normalization over the channel axis ({type(module).__name__} {dg._module2name.get(module, node.name)})"
    if node.type == ops.OPTYPE.OUTPUT:
        return "the channels reach the model output"
    return f"{node.type.name.lower()} op {node.name} carries the channels"


def plan_channel_groups(model: nn.Module, example_inputs) -> list[ChannelGroup]:
    """One ChannelGroup per Conv2d/Linear producer, found with torch-pruning's DependencyGraph."""
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, forward_fn=lambda mod, ex: ex.call(mod), verbose=False)
    names = {module: name for name, module in model.named_modules()}
    plans = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            n, prune_out = module.out_channels, tp.prune_conv_out_channels
        elif isinstance(module, nn.Linear):
            n, prune_out = module.out_features, tp.prune_linear_out_channels
        else:
            continue
        if module not in dg.module2node:
            continue  # not used in the forward pass
        plan = ChannelGroup(producer=name, channels=n)
        for item in dg.get_pruning_group(module, prune_out, list(range(n))).items:
            target = item.dep.target.module
            plan.reason = plan.reason or _blocker(dg, item, n)
            if isinstance(target, (nn.Conv2d, nn.Linear)):
                if dg.is_out_channel_pruning_fn(item.dep.handler):
                    plan.outs.append(target)
                else:
                    plan.ins.append(target)
                    plan.consumers.append(names.get(target, "?"))
            elif isinstance(target, nn.modules.batchnorm._BatchNorm):
                plan.norms.append(target)
        if plan.reason is None and len(plan.outs) != 1:
            plan.reason = f"{len(plan.outs)} layers write these channels (residual/shared tensor)"
        plans.append(plan)
    return plans


@torch.no_grad()
def apply_permutation(plan: ChannelGroup, perm: torch.Tensor) -> None:
    """Reorder the group's channels: new channel i is old channel perm[i], everywhere."""
    for module in plan.outs:
        module.weight.copy_(module.weight[perm])
        if module.bias is not None:
            module.bias.copy_(module.bias[perm])
    for module in plan.ins:
        module.weight.copy_(module.weight[:, perm])
    for norm in plan.norms:
        for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
            if tensor is not None:
                tensor.copy_(tensor[perm])


def _kept(grouped: torch.Tensor, n: int) -> torch.Tensor:
    """Magnitude kept by N:M in [..., m, F] groups (rows of one group compete per column)."""
    return grouped.topk(n, dim=-2).values.sum((-2, -1))


def search_permutation(rows: torch.Tensor, n: int, m: int, time_budget_s: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Greedy channel-swap search over |rows| [C, F]; returns perm with kept(rows[perm]) >= kept(rows).

    Each round scores every swap of one channel in group a with one in group b (all pairs
    a<b, vectorised), then applies the best improving swap of disjoint group pairs.
    Stops when no swap helps or the time budget is spent.
    """
    rows = rows.detach().abs().float()
    channels, width = rows.shape
    groups = channels // m
    perm = torch.arange(channels)
    if groups < 2 or channels % m:
        return perm
    deadline = time.monotonic() + time_budget_s
    pair_a, pair_b = torch.triu_indices(groups, groups, 1)
    eye = torch.eye(m, dtype=torch.bool)
    chunk = max(1, 2**22 // (m**3 * width))
    generator = torch.Generator().manual_seed(seed)
    tolerance = 1e-7 * float(rows.sum())
    while time.monotonic() < deadline:
        grouped = rows[perm].reshape(groups, m, width)
        base = _kept(grouped, n)
        order = torch.randperm(len(pair_a), generator=generator)
        found = []  # (gain, a, b, u, v) best swap per scored pair
        for start in range(0, len(order), chunk):
            sel = order[start:start + chunk]
            a, b = pair_a[sel], pair_b[sel]
            A, B = grouped[a], grouped[b]
            # [pair, u, v, row, F]: row u of A replaced by row v of B, and vice versa
            new_a = torch.where(eye[None, :, None, :, None], B[:, None, :, None, :], A[:, None, None])
            new_b = torch.where(eye[None, None, :, :, None], A[:, :, None, None, :], B[:, None, None])
            gain = _kept(new_a, n) + _kept(new_b, n) - (base[a] + base[b])[:, None, None]
            best, flat = gain.reshape(len(sel), -1).max(1)
            good = best > tolerance
            found += zip(best[good].tolist(), a[good].tolist(), b[good].tolist(),
                         (flat[good] // m).tolist(), (flat[good] % m).tolist())
            if time.monotonic() > deadline:
                break
        touched: set[int] = set()
        for _, a, b, u, v in sorted(found, reverse=True):
            if a not in touched and b not in touched:
                i, j = a * m + u, b * m + v
                perm[[i, j]] = perm[[j, i]]
                touched.update((a, b))
        if not touched:
            break
    return perm


def _flat_tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat_tensors(o)]
    return []


def _same_outputs(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return len(before) == len(after) and all(
        x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5 * (1 + (float(x.abs().amax()) if x.numel() else 0.0)))
        for x, y in zip(before, after))


def permute_for_sparsity(model: nn.Module, example_inputs, n: int, m: int, targets: list[str],
                         time_budget_s: float = 2.0) -> dict[str, dict]:
    """Permute the input channels of `targets` (by name) to raise N:M kept magnitude; no masking.

    Returns per target: kept_unpermuted, kept (fraction of |w| the mask would keep),
    permuted, and the reason when it was not permuted. The model's function is kept:
    each applied permutation is checked on `example_inputs` and undone if outputs move.
    """
    was_training = model.training
    model.eval()
    try:
        modules = dict(model.named_modules())
        result = {name: {"kept_unpermuted": kept_fraction(modules[name].weight, n, m), "permuted": False,
                         "reason": "its input does not come from a Conv2d/Linear (model input or unsupported op)"}
                  for name in targets}
        try:
            plans = plan_channel_groups(model, example_inputs)
        except Exception as error:  # tracing failed: mask without permuting rather than abort the compile
            for info in result.values():
                info["reason"] = f"torch-pruning could not trace the model ({type(error).__name__}: {error})"
            plans = []
        with torch.no_grad():
            reference = _flat_tensors(example_inputs.call(model))
        for plan in plans:
            wanted = [name for name in plan.consumers if name in result]
            if not wanted:
                continue
            if plan.reason is not None:
                for name in wanted:
                    result[name]["reason"] = f"producer {plan.producer}: {plan.reason}"
                continue
            rows = torch.cat([modules[name].weight.detach().movedim(1, 0).reshape(plan.channels, -1)
                              for name in wanted], dim=1)
            perm = search_permutation(rows, n, m, time_budget_s)
            if torch.equal(perm, torch.arange(plan.channels)):
                for name in wanted:
                    result[name]["reason"] = "search found no better channel order"
                continue
            apply_permutation(plan, perm)
            with torch.no_grad():
                same = _same_outputs(reference, _flat_tensors(example_inputs.call(model)))
            if not same:
                apply_permutation(plan, torch.argsort(perm))
                for name in wanted:
                    result[name]["reason"] = (f"producer {plan.producer}: permuting changed the outputs "
                                              "(an op the dependency graph missed couples these channels)")
                continue
            for name in wanted:
                result[name].update(permuted=True, reason=None)
        for name, info in result.items():
            info["kept"] = kept_fraction(modules[name].weight, n, m)
        return result
    finally:
        model.train(was_training)
