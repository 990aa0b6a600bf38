"""Building report.json: its first fields, the benchmark's fields, the gates' verdicts and the closing
measurements (stage times, peak memory). The views of it are render.py and the section modules."""
from __future__ import annotations

import dataclasses
import time

from prune2deploy import __version__
from prune2deploy.artifacts.manifest import tool_versions
from prune2deploy.runtime.peak_memory import process_peak_mb


def add_benchmark(report: dict, bench: dict) -> None:
    stats = bench["stats"]
    for name, s in stats.items():  # dense_fp32 / pruned_fp32: the same models in FP32, timed as baselines
        base = report["models"].get(name.removesuffix("_fp32"), report["models"]["dense"])
        report["models"].setdefault(name, {k: v for k, v in base.items() if k != "latency_ms"})["latency_ms"] = s
    report["speedup"] = stats["dense"]["p50"] / stats["pruned"]["p50"]  # what pruning bought, same precision
    # what the whole compile bought: pruned at the deployed precision vs the dense model in FP32, same runtime
    report["speedup_vs_dense_fp32"] = stats.get("dense_fp32", stats["dense"])["p50"] / stats["pruned"]["p50"]
    if "pruned_2to4" in stats:
        report["speedup_2to4"] = stats["dense"]["p50"] / stats["pruned_2to4"]["p50"]
    if report["mac_reduction"]:
        report["efficiency"] = report["speedup"] / report["mac_reduction"]
    report["benchmark"] = {k: v for k, v in bench.items() if k not in ("stats", "warnings", "sparsity")}
    if "sparsity" in bench:  # torch-cuda: the measured per-layer 2:4 decisions
        report["sparsity"] = bench["sparsity"]
    report["warnings"].extend(bench["warnings"])


def evaluate_gates(gates: list, report: dict) -> list:
    """Gates go into the report; a gate naming a missing field is a UserError before anything is published."""
    if not gates:
        return []
    if report.get("status") == "prepared":
        report["gates"] = {"evaluated": False, "reason": "the target was not benchmarked here"}
        return []
    from prune2deploy.report.gates import check_gate_fields, evaluate

    check_gate_fields(gates, report)
    results = evaluate(gates, report)
    report["gates"] = {"evaluated": True, "passed": all(r.passed for r in results),
                       "results": [dataclasses.asdict(r) for r in results]}
    return results


def finish_report(report: dict, progress, started: float) -> None:
    report["stages_s"] = dict(progress.times)
    report["stages_cpu_s"] = dict(progress.cpu_times)  # load-independent: growth on a shared machine
    report["stages_peak_rss_mb"] = dict(progress.peaks_mb)
    report["wall_s"] = round(time.perf_counter() - started, 3)
    report["peak_rss_mb"] = process_peak_mb()


def new_report(options, model_name: str) -> dict:
    versions = tool_versions()
    return {
        "p2d_version": __version__, "model": model_name, "target": options.target, "device": None,
        "versions": {"torch": versions["torch"], "torch_pruning": versions["torch-pruning"],
                     "onnx": versions["onnx"], "onnxruntime": versions["onnxruntime"]},
        "options": options.resolved(), "warnings": [],
    }
