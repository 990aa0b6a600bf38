"""`p2d inspect`: what the pruning pass would see in a model."""
from __future__ import annotations

import torch_pruning as tp

from .measure import count_macs_params
from .passes.attention import plan_attention
from .passes.prune_channels import output_layers


def inspect_model(model, inputs) -> dict:
    macs, params = count_macs_params(model, inputs)
    names = {id(m): n for n, m in model.named_modules()}
    attention = plan_attention(model)
    unwrapped = attention.pruner_kwargs(0.0).get("unwrapped_parameters")
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=inputs.kwargs or inputs.args,
                                               unwrapped_parameters=unwrapped)
    kept = output_layers(DG)
    groups = []
    for group in DG.get_all_groups(ignored_layers=kept, root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]):
        root = group[0].dep.target.module
        layers = []
        for dep, _ in group:
            name = names.get(id(dep.target.module))
            if name and name not in layers:
                layers.append(name)
        groups.append({"root": names.get(id(root), "?"), "width": DG.get_out_channels(root), "layers": layers})
    return {"params": params, "macs": macs, "groups": groups,
            "output_layers": sorted(names[id(m)] for m in kept if id(m) in names),
            "attention_kind": attention.kind,
            "attention": [{"name": b.name, "heads": b.heads, "kind": b.kind} for b in attention.blocks]}
