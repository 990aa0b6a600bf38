"""Speedup read by the ort-cpu timing loop with and without dropping preempted rounds, on an idle core and on a
core shared with one busy process (a child spinning on the same core, ended by its pid when done).

The MNIST CNN (batch 64, trained weights) dense and at 16/48/80 of 32/64/128 channels (the 2x budget's widths),
exported to ONNX, timed interleaved in one onnxruntime session each. Per repeat, two loops back to back: p50 ÷ p50
over every round (the loop before), and over the rounds in which the process was not preempted (what p2d keeps
now), with how many rounds that loop dropped.

    taskset -c 1 python benchmarks/timing_preemption.py
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from budget import trained_mnist  # noqa: E402

from prune2deploy.backends.onnx.export import export_onnx  # noqa: E402
from prune2deploy.backends.ort_cpu.runner import OrtRunner  # noqa: E402
from prune2deploy.context import ExampleInputs  # noqa: E402
from prune2deploy.config.options import CompileOptions  # noqa: E402
from prune2deploy.search.groups import prunable_groups  # noqa: E402
from prune2deploy.search.prune_to import pruned_copy  # noqa: E402
from prune2deploy.runtime.timing import involuntary_switches, time_interleaved  # noqa: E402

WIDTHS = (16, 48, 80)


def spin() -> None:
    while True:
        pass


def speedups(calls: dict, seconds: float) -> dict:
    """p50 ÷ p50 from one loop that keeps every round (the loop before p2d dropped preempted ones), then from one
    that drops them (p2d now), back to back."""
    out = {}
    for how, switches in (("every_round", lambda: 0), ("unpreempted", involuntary_switches)):
        tally = {}
        samples = time_interleaved(calls, budget_s=seconds, switches=switches, tally=tally)
        out[how] = float(np.median(samples["dense"]) / np.median(samples["pruned"]))
        out[f"dense_p50_{how}_ms"] = float(np.median(samples["dense"]))
        out.update({f"{k}_{how}": v for k, v in tally.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--out", type=Path, default=HERE / "results" / "timing_preemption")
    args = p.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="p2d-preemption-") as tmp:
        files, dense, test_x, _ = trained_mnist(2, Path(tmp))
        example = ExampleInputs((test_x[:64],), {})
        options = CompileOptions(round_to=16)
        groups = prunable_groups(dense, example, (), 16)
        pruned = pruned_copy(dense, example, groups, dict(zip((g.name for g in groups), WIDTHS)), options)
        feed = example.as_feed()
        calls = {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            export_onnx(model, example, Path(tmp) / f"{name}.onnx", opset=options.opset, exporter=options.exporter,
                        slim=options.slim)
            calls[name] = OrtRunner(Path(tmp) / f"{name}.onnx").timed_call(feed)
        rows = []
        for condition in ("idle core", "core shared with one busy process"):
            hog = None
            if condition != "idle core":
                hog = multiprocessing.get_context("fork").Process(target=spin, daemon=True)
                hog.start()
                os.sched_setaffinity(hog.pid, cores)
            try:
                for i in range(args.repeats):
                    rows.append({"condition": condition, "repeat": i, **speedups(calls, args.seconds)})
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                if hog is not None:
                    hog.terminate()
                    hog.join()
    result = {"when": when, "load_at_start": load, "pinning": f"pinned to core(s) {cores}",
              "widths": WIDTHS, "seconds": args.seconds, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [f"# ort-cpu speedup with and without preempted rounds ({result['when']}, {result['pinning']}, load "
             f"average at start {result['load_at_start']})", "",
             f"MNIST CNN, batch 64, dense vs {'/'.join(map(str, result['widths']))} of 32/64/128 channels, "
             f"{result['seconds']} s per repeat, interleaved.", "",
             "| condition | repeat | speedup, every round (p50 ÷ p50) | speedup, unpreempted rounds | rounds timed / "
             "preempted (dropped) | dense p50 ms every round / unpreempted |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['repeat']} | {r['every_round']:.2f}x | {r['unpreempted']:.2f}x | "
              f"{r['rounds_timed_unpreempted']} / {r['rounds_preempted_unpreempted']} | "
              f"{r['dense_p50_every_round_ms']:.2f} / {r['dense_p50_unpreempted_ms']:.2f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
