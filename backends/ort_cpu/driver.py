"""Target ort-cpu: every model variant benchmarked interleaved in onnxruntime on this CPU."""
from __future__ import annotations

from prune2deploy.backends.ort_cpu.runner import OrtRunner, default_threads, device_description

from prune2deploy.runtime.timing import (
    high_variance_warnings, preemption_counter, preemption_warnings, summarize, time_interleaved
)
from prune2deploy.backends.onnx.driver import ExportingDriver


class OrtCpuDriver(ExportingDriver):
    def device(self) -> str:
        return device_description()

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        paths = {k.removesuffix(".onnx"): v for k, v in artifacts.items() if k.endswith(".onnx")}
        return benchmark_onnx(paths, inputs.as_feed(), opts, progress)


def benchmark_onnx(paths: dict, feed: dict, opts, progress) -> dict:
    """Interleaved onnxruntime timing of several ONNX files on the same inputs."""
    threads = opts.threads or default_threads()
    runners = {name: OrtRunner(path, threads) for name, path in paths.items()}
    tally = {}
    with progress.stage("benchmark", f"benchmarking {' vs '.join(paths)} (interleaved, {threads} threads)"):
        samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=opts.warmup,
                                   min_iters=opts.min_iters, budget_s=opts.bench_seconds, tally=tally,
                                   switches=preemption_counter(threads))
    batch = next(iter(feed.values())).shape[0] if feed else 1
    stats = {name: summarize(s, batch) for name, s in samples.items()}
    return {"stats": stats, "warnings": high_variance_warnings(stats) + preemption_warnings(tally),
            "settings": {"backend": "onnxruntime", "threads": threads, "warmup": opts.warmup,
                         "iterations": len(next(iter(samples.values()))), "interleaved": True,
                         "batch": batch, "preemption_filter": threads == 1, **tally}}
