"""`p2d sensitivity`'s measurement: prune one group at a time at each ratio; the metric and the cost saved per point.

The metric is --metric on validation data after BatchNorm re-estimation (scoring.py), or, without data, fidelity
to the dense model on random inputs, labelled as such. The cost saved is latency measured on ort-cpu (the latency
table's timing, cached) or, with `macs=True`, MACs. Groups are sorted most fragile first: by the mean metric drop
over the ratios, so the user sees at a glance which layers to spare and which are free.
"""
from __future__ import annotations

from prune2deploy.search.executor import make_executor
from prune2deploy.search.groups import prunable_groups
from prune2deploy.search.latency_table import OrtTimer, cached_table, device_name, measure_table, table_key
from prune2deploy.search.scoring import Scorer

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
