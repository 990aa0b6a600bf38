"""Target ort-cpu: every model variant benchmarked interleaved in onnxruntime on this CPU."""
from __future__ import annotations

from prune2deploy.backends.ort_cpu.runner import OrtRunner, default_threads, device_description

from prune2deploy.runtime.timing import benchmark_runners
from prune2deploy.backends.onnx.driver import ExportingDriver
from prune2deploy.backends.ort_cpu.quantize import quantize_int8
from prune2deploy.precision.compare import compare


class OrtCpuDriver(ExportingDriver):
    def device(self) -> str:
        return device_description()

    def precisions(self, options=None) -> tuple[str, ...]:
        return ("fp32", "int8")

    def build(self, models, ctx, work, progress, report) -> dict:
        artifacts = super().build(models, ctx, work, progress, report)
        return self.lower(models, artifacts, work, progress, report)

    def lower(self, models, artifacts: dict, work, progress, report) -> dict:
        """The deployed-precision artifacts of `models` from their verified FP32 ONNX (INT8 only here)."""
        if self.precision is not None and self.precision.deployed == "int8":
            lowered = report.setdefault("lowered", {})
            for name in models:
                out = work / f"{name}.int8.onnx"
                with progress.stage(f"lower_{name}", f"quantizing {name} ONNX to INT8 (onnxruntime)"):
                    lowered[name] = quantize_int8(artifacts[f"{name}.onnx"], out, self.calib_feeds, self.floor, name)
                artifacts[out.name] = out
        return artifacts

    def dense_runner(self, artifacts: dict, opts):
        """The dense model at the deployed precision (what the `cpu` target times to choose a runtime)."""
        return self.deployed_runner(artifacts, "dense", opts) or OrtRunner(artifacts["dense.onnx"], opts.threads)

    def verify(self, references, artifacts, check_sets, opts, progress) -> dict:
        result = super().verify(references, artifacts, check_sets, opts, progress)
        if self.precision is not None and self.precision.deployed == "int8":
            sets, deployed = self.precision_sets or check_sets, {}
            for name, reference in (self.precision_references or references).items():
                with progress.stage(f"verify_{name}_int8", f"checking {name} INT8 ONNX against torch FP32"):
                    deployed[name] = compare(reference, OrtRunner(artifacts[f"{name}.int8.onnx"], opts.threads),
                                             sets, "int8")
            result["deployed"] = deployed
            result["passed"] = result["passed"] and all(v["passed"] for v in deployed.values())
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
