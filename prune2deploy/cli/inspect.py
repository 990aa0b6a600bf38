"""`p2d inspect MODEL`: what a compile would prune, without pruning."""
from __future__ import annotations

import json

from prune2deploy.cli.flags import options_from_args


def cmd_inspect(args) -> int:
    """Show MODEL's params, MACs, the pruning mode a compile would use and what it would prune: the prunable
    groups (the layers torch-pruning prunes together) with widths, or the blocks pruned one by one."""
    from prune2deploy.errors import user_error
    from prune2deploy.model.inputs import build_example_inputs, check_model_runs
    from prune2deploy.passes.inspect import inspect_model
    from prune2deploy.model.loading import load_model

    if not args.model:
        raise user_error("no model given", "p2d inspect MODEL --input-shape ...")
    options_from_args(args, "inspect").validate()
    loaded = load_model(args.model, args.weights, tuple(args.trust or ()), args.trust_pickle)
    inputs = build_example_inputs(loaded.model, args.input_shape, args.input or [], args.example_inputs)
    check_model_runs(loaded.model, inputs)
    info = inspect_model(loaded.model, inputs, args.pruning_mode, args.graph_budget_s, args.graph_budget_gb)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{loaded.name}: {info['params']:,} params, {info['macs']:,} MACs")
    reason = f" ({info['pruning_mode_reason']})" if info["pruning_mode_reason"] else ""
    print(f"pruning mode: {info['pruning_mode']}{reason}")
    if info["attention"]:
        print(f"attention ({info['attention_kind']}): " + ", ".join(
            f"{a['name']} {a['heads']} heads" for a in info["attention"]))
    for item in info["attention_kept"]:
        print(f"left unpruned: {item['group']}: {item['reason']}")
    if info["blocks"] is not None:
        print(f"{len(info['blocks'])} blocks pruned one by one (their outputs keep their width):")
        for name in info["blocks"]:
            print(f"  {name}")
        return 0
    print(f"{len(info['groups'])} prunable groups (root layer: width; layers in the group):")
    for g in info["groups"]:
        print(f"  {g['root']}: {g['width']}; {', '.join(g['layers'])}")
    if info["output_layers"]:
        print(f"kept at full width (they produce the outputs): {', '.join(info['output_layers'])}")
    return 0
