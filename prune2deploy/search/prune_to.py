"""Prune to per-group kept widths: the pruning pass with torch-pruning's per-layer ratios.

Channel groups get `pruning_ratio_dict` entries (keyed by their root layer), heads groups
`head_pruning_ratio_dict` entries (keyed by the attention block); everything else keeps its width. Local
ranking by the pass's criterion, the target's round_to, rollback of groups that break the model, block-local
fallback: all as in passes/prune_channels.py.
"""
from __future__ import annotations

import copy

import torch.nn as nn

from prune2deploy.context import CompileContext
from prune2deploy.passes.attention import _ratio_for_ceil
from prune2deploy.passes.prune_channels import PruneChannels
from prune2deploy.search.groups import HEADS, Group


class PruneToWidths(PruneChannels):
    """PruneChannels with per-group kept widths instead of one ratio (groups not named keep their width)."""

    def __init__(self, groups: list[Group], widths: dict[str, int], criterion: str = "l1",
                 round_to: int | None = None, ignore=(), mode: str = "auto", graph_budget_s: float = 30.0,
                 graph_budget_gb: float = 4.0):
        super().__init__(0.0, criterion, False, 1, round_to, ignore, 0.0, mode, graph_budget_s, graph_budget_gb)
        self.groups = {g.name: g for g in groups}
        self.widths = {name: w for name, w in widths.items() if w < self.groups[name].width}
        self._modules: dict[str, nn.Module] = {}

    def run(self, model: nn.Module, ctx) -> dict:
        self._modules = dict(model.named_modules())
        record = super().run(model, ctx)
        record["widths"] = dict(self.widths)
        return record

    def pruner_kwargs(self, attention) -> dict:
        kwargs = attention.pruner_kwargs(0.0)
        ratios = dict(kwargs.get("pruning_ratio_dict", {}))
        head_ratios = dict(kwargs.get("head_pruning_ratio_dict", {}))
        for name, kept in self.widths.items():
            group = self.groups[name]
            if group.kind == "heads":
                block = self._modules[name.removesuffix(HEADS)]
                head_ratios[block] = _ratio_for_ceil((group.width - kept) / group.width, group.width)
            else:  # torch-pruning keeps int(width * (1 - ratio)) channels: +0.5 keeps float error out of it
                ratios[self._modules[name]] = 1.0 - (kept + 0.5) / group.width
        if ratios:
            kwargs["pruning_ratio_dict"] = ratios
        if head_ratios:
            kwargs["head_pruning_ratio_dict"] = head_ratios
        return kwargs


def pruned_copy(model: nn.Module, inputs, groups: list[Group], widths: dict[str, int], options) -> nn.Module:
    """A copy of `model` pruned to `widths` (group name -> kept width), with the compile's pruning settings."""
    pruned = copy.deepcopy(model)
    prune = pass_for(groups, widths, options)
    ctx = CompileContext(inputs, options)
    ctx.records[prune.name] = prune.run(pruned, ctx)
    prune.ensure(pruned, ctx)
    return pruned.eval()


def pass_for(groups: list[Group], widths: dict[str, int], options) -> PruneToWidths:
    return PruneToWidths(groups, widths, options.criterion, options.round_to, options.ignore,
                         options.pruning_mode, options.graph_budget_s, options.graph_budget_gb)
