"""`p2d inspect`: what the pruning pass would see in a model, and which pruning mode a compile would use.

The whole model's dependency graph is built under the same budget as in a compile (--graph-budget-s/-gb);
when it is too costly or cannot be built (mode auto), or with --pruning-mode block-local, the blocks that
block-local pruning would trace are listed instead, without tracing them.
"""
from __future__ import annotations

import torch_pruning as tp

from prune2deploy.errors import P2DError
from prune2deploy.model.facts import count_macs_params
from prune2deploy.passes.attention import plan_attention
from prune2deploy.passes.block_local import first_blocks
from prune2deploy.passes.graph_budget import DEFAULT_GB, DEFAULT_SECONDS, GraphBudget
from prune2deploy.passes.prune_channels import output_layers, whole_graph_failure


def inspect_model(model, inputs, mode: str = "auto", budget_s: float = DEFAULT_SECONDS,
                  budget_gb: float = DEFAULT_GB) -> dict:
    macs, params = count_macs_params(model, inputs)
    names = {id(m): n for n, m in model.named_modules()}
    attention = plan_attention(model)
    info = {"params": params, "macs": macs, "attention_kind": attention.kind,
            "attention": [{"name": b.name, "heads": b.heads, "kind": b.kind} for b in attention.blocks],
            "attention_kept": attention.kept, "pruning_mode": "global graph", "pruning_mode_reason": None,
            "groups": [], "output_layers": [], "blocks": None}
    why = "--pruning-mode block-local"
    if mode != "block-local":
        try:
            with GraphBudget(budget_s, budget_gb, "the whole model's dependency graph"):
                groups, kept = _whole_graph_groups(model, inputs, attention, names)
        except Exception as exc:  # GraphTooCostly or a tracing failure
            if isinstance(exc, P2DError):
                raise
            why = whole_graph_failure(exc, mode)
        else:
            info.update(groups=groups, output_layers=kept)
            return info
    held = {id(m): item["reason"] for m, item in zip(attention.kept_modules, attention.kept)}
    info.update(pruning_mode="block-local", pruning_mode_reason=why, blocks=first_blocks(model, held)["blocks"])
    return info


def _whole_graph_groups(model, inputs, attention, names) -> tuple[list[dict], list[str]]:
    unwrapped = attention.pruner_kwargs(0.0).get("unwrapped_parameters")
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=inputs.kwargs or inputs.args,
                                               unwrapped_parameters=unwrapped)
    kept = output_layers(DG)
    groups = []
    for group in DG.get_all_groups(ignored_layers=kept + list(attention.ignored_layers),
                                   root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]):
        root = group[0].dep.target.module
        layers = []
        for dep, _ in group:
            name = names.get(id(dep.target.module))
            if name and name not in layers:
                layers.append(name)
        groups.append({"root": names.get(id(root), "?"), "width": DG.get_out_channels(root), "layers": layers})
    return groups, sorted(names[id(m)] for m in kept if id(m) in names)
