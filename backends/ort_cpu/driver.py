"""Target ort-cpu: every model variant benchmarked interleaved in onnxruntime on this CPU."""
from __future__ import annotations

from prune2deploy.backends.ort_cpu.runner import OrtRunner, default_threads, device_description

from prune2deploy.runtime.timing import benchmark_runners, summarize, time_interleaved
from prune2deploy.backends.onnx.driver import ExportingDriver
from prune2deploy.backends.ort_cpu.quantize import quantize_int8

INT8_MIN_SPEEDUP = 1.0  # the pruned INT8 model must be at least this much faster than FP32 to ship
SPEED_CHECK_SECONDS = 2.0


class OrtCpuDriver(ExportingDriver):
    def device(self) -> str:
        return device_description()

    def precisions(self, options=None) -> tuple[str, ...]:
        return ("fp32", "int8")

    def build(self, models, ctx, work, progress, report) -> dict:
        artifacts = super().build(models, ctx, work, progress, report)
        return self.lower(models, artifacts, ctx, work, progress, report)

    def lower(self, models, artifacts: dict, ctx, work, progress, report) -> dict:
        """The deployed-precision artifacts of `models` from their verified FP32 ONNX (INT8 only here)."""
        if self.precision is not None and self.precision.deployed == "int8":
            lowered = report.setdefault("lowered", {})
            for name in models:
                out = work / f"{name}.int8.onnx"
                with progress.stage(f"lower_{name}", f"quantizing {name} ONNX to INT8 (onnxruntime)"):
                    lowered[name] = quantize_int8(artifacts[f"{name}.onnx"], out, self.calib_feeds, self.floor, name)
                artifacts[out.name] = out
            if "pruned" in models and not ctx.options.skip_benchmark:
                self._keep_int8_only_if_faster(artifacts, ctx, progress, report)
        return artifacts

    def _keep_int8_only_if_faster(self, artifacts: dict, ctx, progress, report) -> None:
        """ort-cpu INT8 never ships slower than FP32: on small or narrow convolutions onnxruntime's INT8 kernels
        lose to its FP32 ones (no Q/DQ is left unfused; benchmarks/README.md), so the pruned model is timed both
        ways, interleaved, and FP32 ships when INT8 is not at least INT8_MIN_SPEEDUP faster."""
        threads = ctx.options.threads or default_threads()
        runners = {p: OrtRunner(artifacts[f"pruned{s}.onnx"], threads) for p, s in (("fp32", ""), ("int8", ".int8"))}
        feed = ctx.example_inputs.as_feed()
        with progress.stage("int8_speed_check", "timing the pruned model in INT8 against FP32 (onnxruntime)"):
            samples = time_interleaved({p: r.timed_call(feed) for p, r in runners.items()}, warmup=3, min_iters=20,
                                       budget_s=SPEED_CHECK_SECONDS)
        p50 = {p: summarize(s)["p50"] for p, s in samples.items()}
        check = {"fp32_p50_ms": p50["fp32"], "int8_p50_ms": p50["int8"], "speedup": p50["fp32"] / p50["int8"],
                 "min_speedup": INT8_MIN_SPEEDUP}
        report["int8_speed_check"] = check
        if check["speedup"] >= INT8_MIN_SPEEDUP:
            return
        for key in [k for k in artifacts if k.endswith(".int8.onnx")]:
            artifacts.pop(key).unlink(missing_ok=True)
        report.pop("lowered", None)
        self.precision.deployed = "fp32"
        self.precision.why = (f"int8 was asked for, but the pruned INT8 model ran {1 / check['speedup']:.2f}x the "
                              f"time of FP32 in onnxruntime here ({p50['int8']:.3g} vs {p50['fp32']:.3g} ms): "
                              "ort-cpu ships FP32 rather than a slower INT8 (ov-cpu's INT8 may be faster)")

    def verify(self, references, artifacts, check_sets, opts, progress) -> dict:
        result = super().verify(references, artifacts, check_sets, opts, progress)
        if self.precision is not None and self.precision.deployed == "int8":
            return self.check_deployed(result, references, check_sets,
                                       lambda name: OrtRunner(artifacts[f"{name}.int8.onnx"], opts.threads),
                                       "INT8 ONNX", progress)
        return result

    def deployed_runner(self, artifacts, name, opts):
        path = artifacts.get(f"{name}.int8.onnx")
        return OrtRunner(path, opts.threads) if path else None

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        paths = {k.removesuffix(".onnx"): v for k, v in artifacts.items()
                 if k.endswith(".onnx") and not k.endswith(".int8.onnx")}
        if self.precision is not None and self.precision.deployed == "int8":  # the 2x2: dense and pruned in FP32 too
            paths = {"dense_fp32": paths["dense"], "pruned_fp32": paths["pruned"],
                     **{k.removesuffix(".int8.onnx"): v for k, v in artifacts.items() if k.endswith(".int8.onnx")}}
        return benchmark_onnx(paths, inputs.as_feed(), opts, progress)


def benchmark_onnx(paths: dict, feed: dict, opts, progress) -> dict:
    """Interleaved onnxruntime timing of several ONNX files on the same inputs."""
    threads = opts.threads or default_threads()
    result = benchmark_runners({name: OrtRunner(path, threads) for name, path in paths.items()}, feed, threads, opts,
                               progress, "")
    result["settings"] = {"backend": "onnxruntime", **result["settings"]}
    return result
