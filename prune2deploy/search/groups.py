"""The prunable groups of a model, with stable names and dense widths, as the pruning pass sees them.

A channel group is torch-pruning's group of coupled layers, named by its root layer (`layer1.0.conv1`), its width
the root's output channels; groups that reach the model's outputs (kept at full width by the pruning pass) or
would shrink an --ignore'd layer are left out. A transformer's attention block is one heads group (`NAME:heads`, width the
number of heads; hf-bert and timm attention, the kinds torch-pruning removes heads of); its FFN is a channel group.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn
import torch_pruning as tp

from prune2deploy.passes.attention import plan_attention
from prune2deploy.passes.prune_channels import output_layers, resolve_layers

HEADS = ":heads"


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # "channels" | "heads"
    width: int  # dense width: output channels of the root layer, or heads
    step: int = 1  # kept widths are multiples of this (the target's round_to for channels)

    @property
    def min_width(self) -> int:
        return min(self.step, self.width)

    def allowed(self, width: int) -> int:
        """`width` rounded down to an allowed kept width (a multiple of step, at least min_width)."""
        if width >= self.width:
            return self.width
        return max(self.min_width, width - width % self.step)

    def widths_below(self, width: int) -> list[int]:
        """Every allowed kept width smaller than `width`, largest first."""
        return [w for w in range(self.allowed(width - 1), self.min_width - 1, -self.step) if w < width]

    def grid(self, fractions) -> list[int]:
        """Allowed widths at these kept fractions of the dense width (deduplicated, largest first, dense excluded)."""
        found = {self.allowed(round(f * self.width)) for f in fractions}
        return sorted((w for w in found if w < self.width), reverse=True)

    def to_dict(self) -> dict:
        return asdict(self)


def prunable_groups(model: nn.Module, inputs, ignore=(), round_to: int | None = None) -> list[Group]:
    """The groups a per-group allocation can shrink, in model order."""
    names = {id(m): n for n, m in model.named_modules()}
    attention = plan_attention(model)
    by_tp = [b for b in attention.blocks if b.kind in ("hf-bert", "timm-vit")]
    head_layers = {id(layer) for b in by_tp for layer in b.head_layers}
    unwrapped = attention.pruner_kwargs(0.0).get("unwrapped_parameters")
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=inputs.kwargs or inputs.args,
                                               unwrapped_parameters=unwrapped)
    kept = [m for layer in output_layers(DG) for m in layer.modules()]  # as the pruning pass ignores them
    kept += [m for layer in resolve_layers(model, list(ignore)) for m in layer.modules()]
    kept += [m for b in attention.blocks if b.kind == "torch-mha" for m in b.module.modules()]
    kept += list(attention.ignored_layers)
    groups = []
    for group in DG.get_all_groups(ignored_layers=kept, root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]):
        members = {id(dep.target.module) for dep, _ in group}
        root = group[0].dep.target.module
        if id(root) not in names or members & head_layers:
            continue
        groups.append(Group(names[id(root)], "channels", DG.get_out_channels(root), round_to or 1))
    groups += [Group(b.name + HEADS, "heads", b.heads) for b in by_tp]
    order = {n: i for i, n in enumerate(names.values())}
    return sorted(groups, key=lambda g: order.get(g.name.removesuffix(HEADS), 0))


def dense_widths(groups: list[Group]) -> dict[str, int]:
    return {g.name: g.width for g in groups}
