"""Every allocation of a small net, measured: which widths can meet a speedup budget within [0.95, 1.10] of it on
ort-cpu, and how accurate each is after the same recovery, next to uniform-like widths (every group at one kept
fraction) on either side of the budget. It answers whether a budget row of benchmarks/budget.py can be met at all,
independently of how the search walks (MNIST CNN, batch 64: with --round-to 16 it has 2 x 4 x 8 = 64 allocations).

Each allocation is timed against the dense model, interleaved (the budget search's own check: OrtTimer, paired
per-round ratio, preempted rounds dropped). Each allocation within the range, and the uniform-like ones next to
it, gets the compile's recovery (BN re-estimation, then the KD recovery for --recover-steps steps, the budget
tie-break's settings) on the training split; top-1 on the validation split and on the 10,000 test images.

    taskset -c 1 python benchmarks/budget_landscape.py --budgets 2 3 --round-to 16
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from budget import trained_mnist  # noqa: E402

from prune2deploy.data.prepare import prepare_data  # noqa: E402
from prune2deploy.context import ExampleInputs  # noqa: E402
from prune2deploy.examples import mnist_cnn  # noqa: E402
from prune2deploy.config.options import CompileOptions  # noqa: E402
from prune2deploy.recovery.recover_pass import recovery_method  # noqa: E402
from prune2deploy.recovery.bn_recalibration import recalibrate_bn  # noqa: E402
from prune2deploy.recovery.trainer import recover  # noqa: E402
from prune2deploy.search.groups import prunable_groups  # noqa: E402
from prune2deploy.search.latency_table import OrtTimer  # noqa: E402
from prune2deploy.search.prune_to import pruned_copy  # noqa: E402
from prune2deploy.search.tie_break import tie_break_config  # noqa: E402

RANGE = (0.95, 1.10)  # achieved / requested: the range
RECOVER_EPOCHS = 2  # recovery stops at --recover-steps or after this many epochs, whichever comes first


def label(widths: tuple[int, ...]) -> str:
    return "/".join(map(str, widths))


def uniform_like(groups, allocations) -> set[tuple[int, ...]]:
    """Allocations that some single kept fraction produces (every group at allowed(round(f x width)))."""
    return {tuple(g.allowed(max(1, round(f / 1000 * g.width))) for g in groups) for f in range(1, 1001)} & \
        set(allocations)


def maximal(allocations: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The allocations that no other one keeps at least as many channels of in every group."""
    return [w for w in allocations
            if not any(o != w and all(a >= b for a, b in zip(o, w)) for o in allocations)]


def timed_before(path: Path, allocations: list[tuple[int, ...]]) -> dict[tuple[int, ...], float]:
    """The speedups an earlier run measured, for every one of these allocations."""
    earlier = json.loads(path.read_text())
    speedup = {tuple(int(v) for v in w.split("/")): s for w, s in earlier["speedup"].items()}
    missing = [label(w) for w in allocations if w not in speedup]
    if missing:
        sys.exit(f"{path} has no speedup for {len(missing)} allocations (e.g. {missing[0]}): was it run with the same "
                 f"--round-to?")
    return {w: speedup[w] for w in allocations}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0, help="timing of each allocation against dense")
    p.add_argument("--recover-steps", type=int, default=300)
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--mnist-batch", type=int, default=64)
    p.add_argument("--maximal-only", action="store_true",
                   help="recover only the allocations within the range that no other one within it keeps at least as "
                        "many channels of in every group (pruning more of every group is not more accurate); for "
                        "--round-to 8, where hundreds fall in the range")
    p.add_argument("--speedups-from", type=Path,
                   help="take every allocation's speedup from this earlier run's .json instead of timing them again "
                        "(same --round-to), e.g. to recover the same allocations for longer")
    p.add_argument("--out", type=Path, default=HERE / "results" / "budget_landscape_mnist")
    args = p.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="p2d-landscape-") as tmp:
        files, dense, test_x, test_y = trained_mnist(args.train_epochs, Path(tmp))
        example = ExampleInputs((test_x[:args.mnist_batch],), {})
        options = CompileOptions(round_to=args.round_to, data=str(files["train.pt"]), val_data=str(files["val.pt"]),
                                 batch_size=128, epochs=RECOVER_EPOCHS, max_steps=args.recover_steps)
        data = prepare_data(options, dense, example)
    groups = prunable_groups(dense, example, (), args.round_to)
    allocations = list(itertools.product(*[[w for w in range(g.min_width, g.width + 1, g.step)] for g in groups]))
    speedup = timed_before(args.speedups_from, allocations) if args.speedups_from else {}
    timer = OrtTimer(example, options, args.seconds)
    for widths in (w for w in allocations if w not in speedup):
        p50 = timer({"dense": dense, "pruned": pruned_copy(dense, example, groups,
                                                              dict(zip((g.name for g in groups), widths)), options)})
        speedup[widths] = p50["dense"] / p50["pruned"]
        print(f"{label(widths)}: {speedup[widths]:.3f}x", flush=True)
    uniform = uniform_like(groups, allocations)
    config, _ = tie_break_config(options, recovery_method(options, data), len(data.train))
    recovered = {}

    def accuracy(widths) -> dict:
        if widths not in recovered:
            model = pruned_copy(dense, example, groups, dict(zip((g.name for g in groups), widths)), options)
            recalibrate_bn(model, data.train)
            record = recover(model, dense, data.train, data.val, data.metric, config, data.metric(model, data.val))
            recovered[widths] = {"val_top1": record["metric_after"], "steps": record["steps"],
                                 "test_top1": mnist_cnn.top1(model.eval(), test_x, test_y)}
            print(f"{label(widths)}: {recovered[widths]}", flush=True)
        return recovered[widths]

    budgets = []
    for budget in args.budgets:
        within = [w for w in allocations if RANGE[0] <= speedup[w] / budget <= RANGE[1]]
        if args.maximal_only:
            within = maximal(within)
        slower = [w for w in uniform if speedup[w] / budget < RANGE[0]]
        faster = [w for w in uniform if speedup[w] / budget > RANGE[1]]
        nearest = ([max(slower, key=speedup.get)] if slower else []) + ([min(faster, key=speedup.get)] if faster else [])
        rows = [{"widths": label(w), "speedup": speedup[w], "achieved_over_requested": speedup[w] / budget,
                 "within_range": w in within, "uniform_like": w in uniform, **accuracy(w)}
                for w in sorted(set(within) | set(nearest), key=speedup.get)]
        budgets.append({"budget": budget, "rows": rows})
    result = {"when": started, "load_at_start": load, "pinning": f"pinned to core(s) {sorted(os.sched_getaffinity(0))}",
              "groups": [g.to_dict() for g in groups], "args": {k: str(v) for k, v in vars(args).items()},
              "speedup": {label(w): s for w, s in speedup.items()}, "budgets": budgets}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    groups = " / ".join(f"{g['name']} {g['width']}" for g in result["groups"])
    timed = (f"in the earlier run {Path(result['args']['speedups_from']).name} (not timed again)"
             if result["args"].get("speedups_from") not in (None, "None") else
             f"(interleaved, {result['args']['seconds']} s, the search's own check)")
    which = ("that no other one within it keeps at least as many channels of in every group "
             if result["args"].get("maximal_only") == "True" else "")
    lines = [f"# Every allocation of the MNIST CNN timed on ort-cpu ({result['when']}, {result['pinning']}, load "
             f"average at start {result['load_at_start']})", "",
             f"Groups (dense widths): {groups}; widths in steps of {result['args']['round_to']}; "
             f"{len(result['speedup'])} allocations, each timed against dense {timed}. Per budget: every "
             f"allocation measured within {RANGE[0]}-{RANGE[1]} of it {which}and the uniform-like allocations (one "
             f"kept fraction for every group) nearest on either side, each "
             f"recovered alike (KD for {result['args']['recover_steps']} steps at most, at most "
             f"{RECOVER_EPOCHS} epochs); top-1 on the validation split and on the "
             f"10,000 test images.", ""]
    for b in result["budgets"]:
        lines += [f"## {b['budget']:g}x", "", "| widths | speedup | achieved / requested | within range | uniform-like | "
                  "recovery steps | val top-1 | test top-1 |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['widths']} | {r['speedup']:.2f}x | {r['achieved_over_requested']:.3f} | "
                  f"{'yes' if r['within_range'] else 'no'} | {'yes' if r['uniform_like'] else 'no'} | "
                  f"{r['steps']} | {r['val_top1']:.2f}% | {r['test_top1']:.2f}% |" for r in b["rows"]]
        lines.append("")
    lines += ["## Every allocation (speedup over dense)", "", "| widths | speedup |", "|---|---|"]
    lines += [f"| {w} | {s:.2f}x |" for w, s in sorted(result["speedup"].items(), key=lambda kv: kv[1])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
