"""`--max-drop` search on real data: the fastest artifact within an accuracy floor (issue: the fastest artifact that
keeps the user's accuracy).

mnist: the bundled MNIST CNN (prune2deploy.examples.mnist_cnn) trained one epoch on real MNIST
(benchmarks/data/mnist_train.pt from `make bench-data`), batch 64, target `cpu` (ort-cpu and ov-cpu, each at its
auto precision and INT8), `--max-drop 0.5` top-1 points on the 10,000 validation images (mnist_val.pt); the
final artifact's top-1 on the 10,000 test images (mnist_test.pt) is measured once and never used to choose.
Recovery: KD on the training images, short (200 steps) for scoring, `--recover-minutes` for survivors and the
final compile.

Prints and writes benchmarks/results/max_drop_<model>.{json,md}: every candidate (the frontier), the choice, its
speedups, the test accuracy and the search's wall time. The search's candidates are uniform ratios, so "is the
choice at least as fast as the best uniform candidate within the floor" holds by construction here; the frontier
table shows how far each configuration got.

Usage: python benchmarks/max_drop.py [--max-drop 0.5] [--search-minutes 30] [--recover-minutes 2]
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
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--search-minutes", type=float, default=30.0)
    parser.add_argument("--recover-minutes", type=float, default=2.0)
    parser.add_argument("--out", default=str(RESULTS / "max_drop_mnist"))
    args = parser.parse_args()

    from prune2deploy.backends.ort_cpu.runner import device_description
    from prune2deploy.examples import mnist_cnn
    from prune2deploy.pipeline import Output, compile
    from prune2deploy.report.search import search_markdown
    from prune2deploy.runtime.progress import Progress

    train = torch.load(DATA / "mnist_train.pt", weights_only=True)
    model = mnist_cnn.train(mnist_cnn.build(), train["inputs"], train["labels"], epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = compile(model, torch.zeros(64, 1, 28, 28), target="cpu", out_dir=Path(tmp) / "out",
                         model_name="mnist_cnn", data=str(DATA / "mnist_train.pt"), val_data=str(DATA / "mnist_val.pt"),
                         test_data=str(DATA / "mnist_test.pt"), max_drop=args.max_drop,
                         search_minutes=args.search_minutes, recover_minutes=args.recover_minutes,
                         output=Output(cache_dir=Path(tmp) / "cache"), progress=Progress(enabled=True))
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
    lines = ["# --max-drop search on MNIST (benchmarks/max_drop.py)", "",
             f"{row['machine']}; {row['date']}; batch 64; all cores; `--max-drop {args.max_drop:g}` top-1 points on "
             f"the 10,000 MNIST validation images; search {s['wall_s']:.0f} s, whole compile {wall:.0f} s.", "",
             f"**Chosen:** ratio {s['chosen']['ratio']:g} on {s['chosen']['target']} {s['chosen']['deployed']}: "
             f"{s['chosen']['vs_dense_fp32']:.2f}x dense ORT FP32 in the search's timing loop; the final compile "
             f"measured {report['speedup_vs_dense_fp32']:.2f}x dense FP32 on the same runtime "
             f"(pruning alone {report['speedup']:.2f}x), {report['mac_reduction']:.2f}x fewer MACs.", "",
             f"Validation top-1 (selection): dense FP32 {acc['dense']:.2f}%, shipped "
             f"{acc.get('pruned_deployed', acc['pruned']):.2f}% (drop {acc.get('drop_deployed', acc['drop']):.2f}). "
             f"Test top-1 (10,000 images, never used to choose): dense {test.get('dense', float('nan')):.2f}%, shipped "
             f"{test.get('pruned_deployed', test.get('pruned', float('nan'))):.2f}% (drop {test.get('drop', float('nan')):.2f}).",
             ""] + [line.replace("](frontier.png)", f"]({plot.name})") for line in search_markdown(report)[1:]]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
