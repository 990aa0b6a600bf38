"""GPU benchmark: what `p2d compile --target torch-cuda --sparsity 2:4` buys, through prune2deploy.compile.

Rows: ResNet-50 (torchvision, batch 1 and 32, 3x224x224) and BERT-base (transformers BertModel, 12 layers,
hidden 768, 12 heads, FFN 3072; input_ids/attention_mask/token_type_ids 1x128 and 32x128) at pruning ratios
0.3 and 0.5. RANDOM weights (latency does not depend on them; nothing downloads from a model hub).
BERT loses whole heads and FFN width (head ratio = ratio); outputs keep their width.

Each row is one p2d compile in a worker process of its own (`--one MODEL BATCH RATIO`): target torch-cuda,
fp16 (or --dtype), CUDA graphs (torch.compile mode reduce-overhead), channels_last for ResNet-50,
--round-to 8, --sparsity 2:4 with measured per-layer decisions. From its report: dense, pruned and pruned+2:4
p50 (CUDA events, interleaved), the 2:4 model against its dense-weight twin when any layer went 2:4, the
decisions, and the whole compile wall time (process start to the end of prune2deploy.compile: imports,
model build, prune, 2:4, export, verify, compile, benchmark, report).

Targets (issue 10, on an H100): ResNet-50 batch 32 at 0.5 >= 1.45x; BERT-base 32x128 at 0.5 >= 1.3x;
pruned+2:4 never below 0.98x of its dense-weight twin; ResNet-50 compile incl. benchmark <= 180 s.

Usage: python benchmarks/gpu_sparsity.py [--models resnet50,bert] [--batches 1,32] [--ratios 0.3,0.5]
       [--bench-seconds 8] [--dtype fp16] [--out benchmarks/results]
Needs a CUDA GPU: exits 2 with one line otherwise. Writes gpu_sparsity_<device>_<date>.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from prune2deploy.pipeline import Output

STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("resnet50", "bert")
ROW_TIMEOUT_S = 540
TWO_TO_FOUR_STAGES = ("sparsity", "sparsity_decisions", "export_pruned_2to4", "verify_pruned_2to4",
                      "sparsity_check_pruned_2to4", "compile_pruned_2to4", "compile_pruned_2to4_dense_weights")


def build(name: str, batch: int):
    """(model, example inputs) with random weights."""
    import torch

    from prune2deploy.runtime.compat import import_torchvision

    torchvision = import_torchvision()  # first: transformers imports it too, and a CUDA build needs a shim on CPU torch
    torch.manual_seed(0)
    if name == "resnet50":
        if torchvision is None:
            raise SystemExit("torchvision does not import here")
        return torchvision.models.resnet50(weights=None).eval(), torch.randn(batch, 3, 224, 224)
    if name == "bert":
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig(), add_pooling_layer=False).eval()
        ids = torch.randint(0, model.config.vocab_size, (batch, 128))
        return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    raise SystemExit(f"unknown model {name!r} (use {', '.join(MODELS)})")


def run_one(name: str, batch: int, ratio: float, bench_seconds: float, dtype: str) -> dict:
    """One p2d compile; the row of the table."""
    import prune2deploy

    model, inputs = build(name, batch)
    with tempfile.TemporaryDirectory() as tmp:
        result = prune2deploy.compile(model, inputs, target="torch-cuda", out_dir=Path(tmp) / "out",
                                      model_name=name, ratio=ratio, round_to=8, sparsity="2:4", dtype=dtype,
                                      bench_seconds=bench_seconds, output=Output(use_cache=False))
    wall_s = time.perf_counter() - STARTED
    report = result.report
    models, sparsity = report["models"], report.get("sparsity", {})
    p50 = {k: models[k]["latency_ms"]["p50"] for k in ("dense", "pruned", "pruned_2to4")}
    whole = sparsity.get("whole_model")
    return {
        "model": name, "batch": batch, "ratio": ratio, "device": report["device"],
        "mac_reduction": report["mac_reduction"], "speedup": report["speedup"], "efficiency": report["efficiency"],
        "p50_ms": p50, "cv": {k: models[k]["latency_ms"]["cv"] for k in p50},
        "speedup_2to4": report["speedup_2to4"], "pruned_2to4_vs_pruned": p50["pruned"] / p50["pruned_2to4"],
        "vs_dense_weight_twin": whole["speedup"] if whole else None,
        "semi_structured_layers": sparsity.get("semi_structured_layers", 0),
        "timed_layers": sparsity.get("timed_layers", 0), "summary_2to4": sparsity.get("summary"),
        "decisions": sparsity.get("decisions", []), "settings": report["benchmark"]["settings"],
        "stages_s": report["stages_s"], "compile_wall_s": wall_s,
        "of_which_2to4_s": sum(v for k, v in report["stages_s"].items() if k in TWO_TO_FOUR_STAGES),
        "verification_passed": report["verification"]["passed"], "warnings": report["warnings"],
    }


def spawn_row(name: str, batch: int, ratio: float, args, tmp: Path) -> dict:
    out = tmp / f"{name}_{batch}_{ratio}.json"
    cmd = [sys.executable, __file__, "--one", name, str(batch), str(ratio), "--json-out", str(out),
           "--bench-seconds", str(args.bench_seconds), "--dtype", args.dtype]
    row = {"model": name, "batch": batch, "ratio": ratio}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ROW_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"did not finish in {ROW_TIMEOUT_S} s"}
    if proc.returncode or not out.exists():
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {**row, "error": f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"}
    return json.loads(out.read_text())


def gpu_refusal() -> str:
    import torch

    if not torch.cuda.is_available():
        build_kind = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"needs a CUDA GPU and {build_kind}; run it on a GPU machine"
    return ""


def evaluate_targets(rows: list[dict]) -> list[str]:
    def row(model, batch, ratio):
        return next((r for r in rows if (r["model"], r["batch"], r["ratio"]) == (model, batch, ratio)
                     and "error" not in r), None)

    def line(ok, text):
        return f"{'-' if ok is None else 'PASS' if ok else 'FAIL'} {text}"

    out = []
    for model, label, bar in (("resnet50", "ResNet-50 batch 32 at 0.5", 1.45), ("bert", "BERT-base 32x128 at 0.5", 1.3)):
        r = row(model, 32, 0.5)
        out.append(line(r and r["speedup"] >= bar, f"{label}: speedup >= {bar}x: "
                        + (f"{r['speedup']:.2f}x" if r else "not measured")))
    twins = [r for r in rows if "error" not in r and r["vs_dense_weight_twin"] is not None]
    worst = min(twins, key=lambda r: r["vs_dense_weight_twin"], default=None)
    out.append(line(None if worst is None else worst["vs_dense_weight_twin"] >= 0.98,
                    "pruned+2:4 >= 0.98x of its dense-weight twin: "
                    + (f"worst {worst['vs_dense_weight_twin']:.2f}x ({worst['model']} b{worst['batch']} "
                       f"{worst['ratio']})" if worst else "no row kept a 2:4 layer, nothing to compare")))
    resnet = [r for r in rows if r["model"] == "resnet50" and "error" not in r]
    slowest = max((r["compile_wall_s"] for r in resnet), default=None)
    out.append(line(None if slowest is None else slowest <= 180,
                    "ResNet-50 compile incl. benchmark <= 180 s: "
                    + (f"slowest {slowest:.0f} s" if slowest is not None else "not measured")))
    return out


def markdown(results: dict) -> str:
    lines = [f"# torch-cuda: dense vs pruned vs pruned+2:4 on {results['device']}", "",
             f"{results['date']}; torch {results['versions']['torch']}, CUDA {results['versions']['cuda']}; "
             f"{results['dtype']}, CUDA graphs (reduce-overhead), {results['bench_seconds']} s interleaved "
             "timing per compile; random weights.", "",
             "| model | batch | ratio | MAC reduction | dense / pruned / pruned+2:4 p50 ms | speedup | efficiency "
             "| 2:4 layers (of timed) | pruned+2:4 vs pruned | vs dense-weight twin | compile s (of which 2:4) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['ratio']} | failed: {r['error']} |")
            continue
        p = r["p50_ms"]
        twin = f"{r['vs_dense_weight_twin']:.2f}x" if r["vs_dense_weight_twin"] else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {r['ratio']} | {r['mac_reduction']:.2f}x | "
                     f"{p['dense']:.3f} / {p['pruned']:.3f} / {p['pruned_2to4']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['efficiency']:.2f} | {r['semi_structured_layers']} ({r['timed_layers']}) | "
                     f"{r['pruned_2to4_vs_pruned']:.2f}x | {twin} | {r['compile_wall_s']:.0f} "
                     f"({r['of_which_2to4_s']:.0f}) |")
    lines += ["", "2:4 verdicts:"] + [f"- {r['model']} b{r['batch']} {r['ratio']}: {r['summary_2to4']}"
                                      for r in results["rows"] if "error" not in r]
    lines += ["", "Targets (issue 10):"] + [f"- {t}" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,bert", help=f"comma list from {','.join(MODELS)}")
    parser.add_argument("--batches", default="1,32", help="comma list of batch sizes (default 1,32)")
    parser.add_argument("--ratios", default="0.3,0.5", help="comma list of pruning ratios (default 0.3,0.5)")
    parser.add_argument("--bench-seconds", type=float, default=8.0, help="timing budget per compile (default 8)")
    parser.add_argument("--dtype", default="fp16", help="fp16 | bf16 (default fp16)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "BATCH", "RATIO"), help="worker mode: one row")
    parser.add_argument("--json-out", type=Path, help="worker mode: where to write the row")
    args = parser.parse_args(argv)
    refusal = gpu_refusal()
    if refusal:
        print(f"gpu_sparsity: {refusal}", file=sys.stderr)
        return 2
    if args.one:
        name, batch, ratio = args.one
        row = run_one(name, int(batch), float(ratio), args.bench_seconds, args.dtype)
        args.json_out.write_text(json.dumps(row, indent=2, default=str) + "\n")
        return 0
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                for ratio in (float(r) for r in args.ratios.split(",")):
                    started = time.perf_counter()
                    rows.append(spawn_row(name, batch, ratio, args, Path(tmp)))
                    r = rows[-1]
                    print(f"{name} b{batch} {ratio}: " + (r["error"] if "error" in r else
                          f"{r['speedup']:.2f}x, 2:4 {r['speedup_2to4']:.2f}x ({r['summary_2to4']})")
                          + f" [{time.perf_counter() - started:.0f} s]", file=sys.stderr)
    results = {"device": torch.cuda.get_device_name(0),
               "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
               "dtype": args.dtype, "bench_seconds": args.bench_seconds, "rows": rows}
    results["targets"] = evaluate_targets(rows)
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_sparsity_{re.sub(r'[^A-Za-z0-9]+', '-', results['device']).strip('-').lower()}_{results['date'][:10]}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(f"saved {args.out / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
