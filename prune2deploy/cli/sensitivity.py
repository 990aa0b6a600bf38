"""`p2d sensitivity`: each group pruned alone at each ratio; the metric and the latency saved."""
from __future__ import annotations

import json

from prune2deploy.cli.flags import input_paths, options_from_args


def cmd_sensitivity(args) -> int:
    """Prune one group at a time (channel groups; attention heads and FFN blocks in transformers) at each of
    --ratios; measure --metric on validation data (without data: fidelity to the dense model on random inputs,
    labelled as such) and the latency saved on ort-cpu (or --macs). Writes DIR/sensitivity.json, sensitivity.md
    (a table, most fragile group first) and sensitivity.png (with matplotlib: metric vs ratio per group, and
    latency saved vs ratio). Latency tables are cached in --cache-dir.
    """
    from pathlib import Path

    from prune2deploy.errors import user_error
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model
    from prune2deploy.runtime.progress import Progress
    from prune2deploy.pipeline import sensitivity
    from prune2deploy.search.sensitivity import parse_ratios

    if not args.model:
        raise user_error("no model given", "p2d sensitivity MODEL --input-shape ... --out DIR")
    ratios = parse_ratios(args.ratios)
    options = options_from_args(args, "sensitivity").validate()
    protected = {label: path for label, path in input_paths(args).items()}
    from prune2deploy.artifacts.ownership import check_out_dir

    check_out_dir(Path(args.out), protected)
    loaded = load_model(args.model, args.weights, tuple(args.trust or ()), args.trust_pickle)
    inputs = build_example_inputs(loaded.model, args.input_shape, args.input or [], args.example_inputs,
                                  seed=args.seed)
    result = sensitivity(loaded.model, inputs, args.out, options, ratios, args.macs, args.cache_dir, protected,
                         Progress(enabled=False if args.json else None))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{loaded.name}: {len(result['groups'])} groups, metric {result['metric']} (dense "
          f"{result['dense_score']:.4g}), {result['cost']} saved in {result['unit']}; most fragile first:")
    for row in result["groups"]:
        worst = row["points"][-1]
        print(f"  {row['name']:<45} mean drop {row['mean_drop']:.4g}; at {worst['ratio']:g}: "
              f"{worst['score']:.4g}, saves {worst['saved']:.3g} {result['unit']}")
    print(f"wrote {args.out}/ (sensitivity.json, sensitivity.md, sensitivity.png, manifest.json)")
    return 0
