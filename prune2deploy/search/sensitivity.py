"""`p2d sensitivity`: prune one group at a time at each ratio; the metric and the cost saved per point.

The metric is --metric on validation data after BatchNorm re-estimation (scoring.py), or, without data, fidelity
to the dense model on random inputs, labelled as such. The cost saved is latency measured on ort-cpu (the latency
table's timing, cached) or, with `macs=True`, MACs. Groups are sorted most fragile first: by the mean metric drop
over the ratios, so the user sees at a glance which layers to spare and which are free.
"""
from __future__ import annotations

import json
from pathlib import Path

from prune2deploy.search.executor import make_executor
from prune2deploy.search.groups import prunable_groups
from prune2deploy.search.latency_table import OrtTimer, cached_table, device_name, measure_table, table_key
from prune2deploy.search.scoring import Scorer
from prune2deploy.report.budget import plot_sensitivity

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def parse_ratios(text: str) -> list[float]:
    from prune2deploy.errors import user_error

    try:
        ratios = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise user_error(f"--ratios {text!r} is not a list of numbers", "e.g. --ratios 0.1,0.3,0.5,0.7") from None
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise user_error(f"--ratios {text!r}: every ratio must be in (0, 1)", "e.g. --ratios 0.1,0.3,0.5,0.7")
    return ratios


def measure_sensitivity(model, inputs, options, data, ratios=RATIOS, macs: bool = False, cache_dir=None) -> dict:
    """{"groups": [{name, kind, dense, points: [{ratio, kept, score, saved}], mean_drop}], ...}, fragile first."""
    groups = prunable_groups(model, inputs, options.ignore, options.round_to)
    if not groups:
        from prune2deploy.errors import user_error

        raise user_error("the model has no prunable group", "run `p2d inspect MODEL` to see why")
    kept = {g.name: {r: g.allowed(round((1 - r) * g.width)) for r in ratios} for g in groups}
    grid = {g.name: sorted({w for w in kept[g.name].values() if w < g.width}, reverse=True) for g in groups}
    timer = None if macs else OrtTimer(inputs, options)
    key = None if macs else table_key(model, inputs, groups, grid, options, device_name())
    table, hit = cached_table(None if macs else cache_dir, key,
                              lambda: measure_table(model, inputs, groups, options, timer, grid))
    scorer = Scorer(model, inputs, groups, options, data.metric if data else None,
                    data.train if data else None, data.val if data else None)
    dense = scorer.dense()
    jobs = sorted({(g.name, w) for g in groups for w in grid[g.name]})
    scores = dict(zip(jobs, make_executor(options.workers, options.ray_address).map(
        scorer, [{name: w} for name, w in jobs])))
    rows = []
    for g in groups:
        points = [{"ratio": r, "kept": w, "score": scores.get((g.name, w), dense),
                   "saved": table.saved_at(g.name, w) if w < g.width else 0.0} for r, w in kept[g.name].items()]
        drops = [dense - p["score"] for p in points]
        rows.append({"name": g.name, "kind": g.kind, "dense": g.width, "points": points,
                     "mean_drop": sum(drops) / len(drops)})
    rows.sort(key=lambda r: -r["mean_drop"])
    return {"metric": scorer.label, "validation_samples": scorer.samples, "dense_score": dense,
            "cost": "MACs" if macs else "latency", "unit": table.unit, "dense_cost": table.dense,
            "target": "torch-pruning MAC count" if macs else "ort-cpu", "measured_by": table.measured_by,
            "table_cached": hit, "candidates_scored": len(jobs), "candidates_timed": 0 if hit else
            table.candidates_timed, "ratios": list(ratios), "groups": rows}


def sensitivity(model, example_inputs, out_dir, options=None, ratios=RATIOS, macs: bool = False, cache_dir=None,
                protected_paths: dict | None = None, progress=None, **option_overrides) -> dict:
    """Python API of `p2d sensitivity`: measure, then publish out_dir/{sensitivity.json,.md,.png, manifest.json}.

    `out_dir` follows compile's rules (new, empty or written by p2d; never an input); nothing is written on error.
    """
    import dataclasses

    from prune2deploy.artifacts import cache
    from prune2deploy.data.prepare import prepare_data
    from prune2deploy.model.inputs import check_model_runs
    from prune2deploy.artifacts.manifest import write_manifest
    from prune2deploy.config.options import CompileOptions
    from prune2deploy.artifacts.outdir import check_writable, locked, publish_dir, workspace
    from prune2deploy.artifacts.ownership import check_out_dir
    from prune2deploy.pipeline import as_example_inputs
    from prune2deploy.backends.registry import TARGETS

    options = dataclasses.replace(options or CompileOptions(), **option_overrides).validate()
    if options.round_to is None:
        options.round_to = TARGETS[options.target].round_to
    inputs = as_example_inputs(example_inputs)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_dir()
    check_out_dir(Path(out_dir), {**(protected_paths or {}), "the cache directory": cache_dir})
    check_writable(Path(out_dir))
    model = model.eval()
    check_model_runs(model, inputs)
    data = prepare_data(options, model, inputs)
    from prune2deploy.runtime.progress import Progress

    progress = progress or Progress(enabled=False)
    with progress.stage("sensitivity", f"pruning each group at {len(ratios)} ratios"):
        result = measure_sensitivity(model, inputs, options, data, ratios, macs, cache_dir)
    with locked(Path(out_dir)), workspace() as work:
        write_outputs(result, work)
        write_manifest(work, {"sensitivity": {"ratios": list(ratios), "macs": macs}, "options": options.resolved()})
        publish_dir(work, Path(out_dir))
    return result


def write_outputs(result: dict, work: Path) -> list[str]:
    """sensitivity.json, sensitivity.md and (with matplotlib) sensitivity.png in `work`; the names written."""
    result["plot"] = plot_sensitivity(result, work / "sensitivity.png")
    (work / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n")
    (work / "sensitivity.md").write_text(markdown(result))
    return [n for n in ("sensitivity.json", "sensitivity.md", "sensitivity.png") if (work / n).exists()]


def markdown(result: dict) -> str:
    ratios = result["ratios"]
    lines = ["# Sensitivity: one group pruned at a time", "",
             f"Metric: {result['metric']} on {result['validation_samples']} samples (dense {result['dense_score']:.4g}). "
             f"Cost saved: {result['cost']} ({result['unit']}; dense {result['dense_cost']:.4g}) measured by "
             f"{result['measured_by']}. Most fragile group first (mean metric drop over the ratios).", "",
             "| group | kind | dense | mean drop | " + " | ".join(f"{r:g}" for r in ratios) + " |",
             "|---|---|---|---|" + "---|" * len(ratios)]
    for row in result["groups"]:
        cells = [f"{p['score']:.4g} / {p['saved']:.3g}" for p in row["points"]]
        lines.append(f"| {row['name']} | {row['kind']} | {row['dense']} | {row['mean_drop']:.4g} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Each cell: metric / {result['cost']} saved ({result['unit']}) with only that group pruned at "
              "that ratio (its kept width rounded to round_to)."]
    if result.get("plot"):
        lines += ["", result["plot"] if result["plot"] != "sensitivity.png" else "![sensitivity](sensitivity.png)"]
    return "\n".join(lines) + "\n"
