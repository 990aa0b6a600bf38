"""Why the summed latency table mispredicts a pruned model: its estimate (dense minus the sum of the per-group
savings, each measured with only that group narrowed) against the model measured at the same widths on ort-cpu,
for uniform allocations and pairs of neighbouring groups, next to what MACs would say; on the MNIST CNN also
allocations whose widths are and are not multiples of 16 (latency cliffs no per-group table shows).

    taskset -c 0 python benchmarks/latency_additivity.py --model mnist    # MNIST CNN, batch 64
    taskset -c 0 python benchmarks/latency_additivity.py --model resnet50 # torchvision, random weights, 1x3x224x224
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from prune2deploy.context import ExampleInputs
from prune2deploy.examples import mnist_cnn
from prune2deploy.model.facts import count_macs_params
from prune2deploy.config.options import CompileOptions
from prune2deploy.search.groups import prunable_groups
from prune2deploy.search.latency_table import OrtTimer, measure_table
from prune2deploy.search.prune_to import pruned_copy

RESULTS = Path(__file__).resolve().parent / "results"


def build(name: str):
    if name == "mnist":
        return mnist_cnn.build(), ExampleInputs((torch.rand(64, 1, 28, 28),), {})
    from prune2deploy.runtime.compat import import_torchvision

    torch.manual_seed(0)
    return getattr(import_torchvision().models, name)(weights=None).eval(), \
        ExampleInputs((torch.randn(1, 3, 224, 224),), {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.375, 0.25])
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    model, inputs = build(args.model)
    options = CompileOptions(round_to=8)
    groups = prunable_groups(model, inputs, round_to=8)
    started = time.perf_counter()
    table = measure_table(model, inputs, groups, options, OrtTimer(inputs, options))
    table_s = time.perf_counter() - started
    timer = OrtTimer(inputs, options, args.seconds)
    dense_macs = count_macs_params(model, inputs)[0]
    cases = {f"uniform {f:g}": {g.name: g.allowed(round(f * g.width)) for g in groups} for f in args.fractions}
    if args.model == "mnist":  # widths that are and are not multiples of 16 (the kernels' block on AVX-512)
        for kept in ((16, 32, 128), (16, 40, 128), (16, 48, 128), (24, 32, 128), (32, 32, 128)):
            cases["kept " + "/".join(map(str, kept))] = dict(zip((g.name for g in groups), kept))
    for a, b in zip(groups, groups[1:]):  # neighbouring pairs at half width, and each alone
        if len(cases) >= len(args.fractions) + 11:
            break
        half = {a.name: a.allowed(a.width // 2), b.name: b.allowed(b.width // 2)}
        cases[f"{a.name} + {b.name} at 1/2"] = half
    rows = []
    for name, widths in cases.items():
        pruned = pruned_copy(model, inputs, groups, widths, options)
        p50 = timer({"dense": model, "pruned": pruned})
        measured = p50["pruned"] / p50["dense"]
        estimated = table.estimate(widths) / table.dense
        separate = [table.saved_at(g, w) / table.dense for g, w in widths.items() if w < table.widths[g]]
        rows.append({"case": name, "table_estimate": estimated, "measured": measured,
                     "measured_over_estimate": measured / estimated,
                     "macs_fraction": count_macs_params(pruned, inputs)[0] / dense_macs,
                     "sum_of_separate_savings": sum(separate)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"model": args.model, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "pinning": f"pinned to core(s) {sorted(os.sched_getaffinity(0))}",
           "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg()), "groups": len(groups),
           "table_s": round(table_s, 1), "dense_ms": table.dense, "rows": rows}
    lines = [f"# Summed latency table vs measured model: {args.model} ({out['when']}, {out['pinning']}, "
             f"load average {out['load_average']}; table {table_s:.0f} s over {len(groups)} groups)", "",
             "| allocation | table estimate (fraction of dense) | measured | measured / estimate | MACs fraction |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['table_estimate']:.3f} | {r['measured']:.3f} | {r['measured_over_estimate']:.2f} "
              f"| {r['macs_fraction']:.3f} |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"latency_additivity_{args.model}.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / f"latency_additivity_{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
