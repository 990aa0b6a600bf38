"""Target ort-cpu: dense and pruned ONNX, verified in onnxruntime, benchmarked interleaved on this CPU."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.backends.onnx_export import export_onnx, onnx_bytes
from prune2deploy.backends.ort import OrtRunner, default_threads, device_description

from ..timing import high_variance_warnings, summarize, time_interleaved
from ..verify import verify_onnx

MODELS = ("dense", "pruned")


class OrtCpuDriver:
    def device(self) -> str:
        return device_description()

    def build(self, dense, pruned, ctx, work: Path, progress, report) -> dict:
        opts, artifacts, exports = ctx.options, {}, {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            path = work / f"{name}.onnx"
            with progress.stage(f"export_{name}", f"exporting {name} ONNX"):
                exports[name] = export_onnx(model, ctx.example_inputs, path, opset=opts.opset,
                                            exporter=opts.exporter, slim=opts.slim)
            artifacts[f"{name}.onnx"] = path
        report["export"] = exports
        return artifacts

    def verify(self, dense, pruned, artifacts, check_sets, opts, progress) -> dict:
        per_model = {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            with progress.stage(f"verify_{name}", f"verifying {name} ONNX against torch"):
                runner = OrtRunner(artifacts[f"{name}.onnx"], opts.threads)
                per_model[name] = verify_onnx(model, runner, check_sets, opts.tolerance)
        worst = max(per_model, key=lambda n: per_model[n]["max_rel_err"])
        return {"max_abs_err": max(v["max_abs_err"] for v in per_model.values()),
                "max_rel_err": per_model[worst]["max_rel_err"], "worst_model": worst,
                "worst_output": per_model[worst]["worst_output"], "tolerance": opts.tolerance,
                "passed": all(v["passed"] for v in per_model.values()), "models": per_model}

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        return benchmark_onnx({n: artifacts[f"{n}.onnx"] for n in MODELS}, inputs.as_feed(), opts, progress)

    def model_facts(self, artifacts, name) -> dict:
        return {"onnx_bytes": onnx_bytes(artifacts[f"{name}.onnx"])}


def benchmark_onnx(paths: dict, feed: dict, opts, progress) -> dict:
    """Interleaved onnxruntime timing of several ONNX files on the same inputs."""
    threads = opts.threads or default_threads()
    runners = {name: OrtRunner(path, threads) for name, path in paths.items()}
    with progress.stage("benchmark", f"benchmarking {' vs '.join(paths)} (interleaved, {threads} threads)"):
        samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=opts.warmup,
                                   min_iters=opts.min_iters, budget_s=opts.bench_seconds)
    batch = next(iter(feed.values())).shape[0] if feed else 1
    stats = {name: summarize(s, batch) for name, s in samples.items()}
    return {"stats": stats, "warnings": high_variance_warnings(stats),
            "settings": {"backend": "onnxruntime", "threads": threads, "warmup": opts.warmup,
                         "iterations": len(next(iter(samples.values()))), "interleaved": True,
                         "batch": batch}}
