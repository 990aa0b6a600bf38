"""Channel alignment for OpenVINO's INT8 kernels on this CPU: does ResNet-50 pruned at 0.5 run faster in
OpenVINO INT8 when its widths are multiples of 32 or 64 instead of 16 (ov-cpu's default on an AVX-512 CPU)?

For each `--round-to` R, p2d compiles torchvision's ResNet-50 (random weights, BatchNorm statistics estimated on
random inputs; latency only) at `--ratio 0.5 --target ov-cpu --precision int8 --calib-random`, benchmark
skipped; then the dense model in ORT FP32, the dense model in OpenVINO INT8 and every pruned INT8 IR are timed
together, interleaved, in one process (batch 1, all cores). A wider multiple keeps more channels in some layers
(torch-pruning rounds the kept count), so the MACs of each are listed beside its latency.

Usage: python benchmarks/ov_alignment.py [--round-to 16,32,64] [--bench-seconds 8]
Writes benchmarks/results/ov_alignment_resnet50.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-to", default="16,32,64")
    parser.add_argument("--bench-seconds", type=float, default=8.0)
    args = parser.parse_args()
    multiples = [int(v) for v in args.round_to.split(",")]

    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from precision import _as_inputs, build

    from prune2deploy.backends.ort_cpu.runner import OrtRunner, device_description
    from prune2deploy.backends.ov_cpu.runner import OvRunner
    from prune2deploy.pipeline import Output, compile
    from prune2deploy.runtime.timing import summarize, time_interleaved

    rows, runners = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, example, extra = build("resnet50", work)
        for r in multiples:
            out = work / f"r{r}"
            report = compile(model, example, target="ov-cpu", out_dir=out, ratio=0.5, precision="int8",
                             round_to=r, skip_benchmark=True, output=Output(use_cache=False), **extra).report
            rows.append({"round_to": r, "mac_reduction": report["mac_reduction"],
                         "params_reduction": report.get("param_reduction")})
            runners[f"pruned int8 round_to {r}"] = OvRunner(out / "pruned.int8.xml", None, "int8")
            if "dense ov-cpu int8" not in runners:
                runners["dense ov-cpu int8"] = OvRunner(out / "dense.int8.xml", None, "int8")
                runners["dense ort-cpu fp32"] = OrtRunner(out / "dense.onnx")
        feed = _as_inputs(example).as_feed()
        samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=10, min_iters=30,
                                   budget_s=args.bench_seconds * len(runners))
    p50 = {n: summarize(s)["p50"] for n, s in samples.items()}
    for row in rows:
        name = f"pruned int8 round_to {row['round_to']}"
        row.update(p50_ms=p50[name], vs_dense_ort_fp32=p50["dense ort-cpu fp32"] / p50[name],
                   vs_dense_ov_int8=p50["dense ov-cpu int8"] / p50[name])
    meta = {"machine": device_description(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "dense_p50_ms": {k: v for k, v in p50.items() if k.startswith("dense")}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ov_alignment_resnet50.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Channel alignment for OpenVINO INT8: ResNet-50 at ratio 0.5 (benchmarks/ov_alignment.py)", "",
             f"{meta['machine']}; {meta['date']}; batch 1, all cores, one interleaved loop; random weights (latency "
             f"only). Dense: ORT FP32 {p50['dense ort-cpu fp32']:.2f} ms, OpenVINO INT8 {p50['dense ov-cpu int8']:.2f} ms.",
             "", "| --round-to | MAC reduction | p50 ms | vs dense ORT FP32 | vs dense OpenVINO INT8 |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['round_to']} | {r['mac_reduction']:.2f}x | {r['p50_ms']:.3f} | {r['vs_dense_ort_fp32']:.2f}x | "
              f"{r['vs_dense_ov_int8']:.2f}x |" for r in rows]
    (RESULTS / "ov_alignment_resnet50.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
