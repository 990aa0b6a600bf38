"""Targets trt-ampere / trt-hopper / trt: FP16 ONNX for a strongly typed network, a build plan per
model, and, where TensorRT and a GPU exist, engines benchmarked with CUDA events.

Without TensorRT the compile stops after everything that needs no TensorRT (pruning, N:M layout,
FP32 and FP16 ONNX, their checks, build plans) and `p2d build OUT_DIR` finishes on a machine with it.
"""
from __future__ import annotations

import json
from pathlib import Path

from prune2deploy.backends.tensorrt import engine as trt_backend
from prune2deploy.backends.tensorrt.fp16 import to_fp16_onnx
from prune2deploy.backends.tensorrt.int8 import to_int8_qdq_onnx
from prune2deploy.backends.ort_cpu.runner import OrtRunner, device_description

from prune2deploy.errors import MissingDependency
from prune2deploy.runtime.timing import high_variance_warnings, summarize
from prune2deploy.backends.onnx.verify import verify_onnx
from prune2deploy.backends.onnx.driver import ExportingDriver

FP16_TOLERANCE = 5e-2  # max |fp16 - torch fp32| relative to the output's largest magnitude
PLAN_FILE = "build_plan.json"


class TensorRtDriver(ExportingDriver):
    def __init__(self, target: str):
        self.target = target
        self.spec = trt_backend.target_spec(target)

    def availability(self) -> tuple[bool, str]:
        return trt_backend.availability(self.target)

    def precisions(self, options=None) -> tuple[str, ...]:
        return ("fp16", "int8")  # int8: Q/DQ in the ONNX (strongly typed networks; see int8.py)

    def auto_precision(self, options=None) -> tuple[str, str]:
        return "fp16", "TensorRT engines are built from the FP16 ONNX (a strongly typed network)"

    def finish(self, work: Path, opts, progress) -> dict:
        return build_and_benchmark(work, opts, progress)

    def made_by_benchmark(self, work: Path) -> list[str]:
        return [p.name for pattern in ("*.engine", "*.timing.cache", "*.build.json") for p in work.glob(pattern)]

    def unavailable(self, reason: str, out_dir: Path) -> MissingDependency:
        return MissingDependency(f"{reason.removesuffix('with `p2d build OUT_DIR`').rstrip()} "
                                 f"(the prepared artifacts are in {out_dir})", f"p2d build {out_dir}")

    def device(self) -> str:
        gpu = trt_backend._probe_gpu()
        return f"{gpu[0]} (sm_{gpu[1][0]}{gpu[1][1]})" if gpu else f"no GPU here; prepared on {device_description()}"

    def build(self, models, ctx, work: Path, progress, report) -> dict:
        artifacts = super().build(models, ctx, work, progress, report)
        int8 = self.precision is not None and self.precision.deployed == "int8"
        suffix = ".int8" if int8 else ".fp16"
        lowered = {}
        for name in models:
            src, dst = artifacts[f"{name}.onnx"], work / f"{name}{suffix}.onnx"
            if int8:
                with progress.stage(f"int8_{name}", f"writing {name} INT8 Q/DQ ONNX for TensorRT"):
                    lowered[name] = to_int8_qdq_onnx(src, dst, self.calib_feeds)
            else:
                with progress.stage(f"fp16_{name}", f"writing {name} FP16 ONNX"):
                    lowered[name] = to_fp16_onnx(src, dst)
            artifacts[dst.name] = dst
        report["lowered" if int8 else "fp16"] = lowered
        if ctx.records.get("sparsity"):
            report["sparsity_check"].update(
                self.check_sparsity(artifacts, models, ctx.records["sparsity"], progress, suffix=".fp16"))
        shapes = {n: list(t.shape) for n, t in zip(ctx.example_inputs.names, ctx.example_inputs.tensors())}
        plans = {}
        for name in models:
            settings = trt_backend.BuildSettings(self.spec, input_shapes=shapes,
                                                 sparse_weights=bool(ctx.records.get("sparsity")) and name.endswith("_2to4"),
                                                 dynamic_batch=ctx.options.batch_profile())
            plan = trt_backend.plan_build(settings, engine_path=Path(f"{name}.engine"))
            plans[name] = {"onnx": f"{name}{suffix}.onnx", "engine": f"{name}.engine", "plan": plan}
        (work / PLAN_FILE).write_text(json.dumps({"target": self.target, "input_shapes": shapes,
                                                  "models": plans}, indent=2) + "\n")
        artifacts[PLAN_FILE] = work / PLAN_FILE
        report["build_plan"] = plans
        return artifacts

    def verify(self, references, artifacts, check_sets, opts, progress) -> dict:
        result = super().verify(references, artifacts, check_sets, opts, progress)
        if self.precision is not None and self.precision.deployed == "int8":
            return self._verify_int8(result, references, artifacts, check_sets, opts, progress)
        fp16 = {}
        for name, reference in references.items():
            with progress.stage(f"verify_{name}_fp16", f"verifying {name} FP16 ONNX against torch"):
                runner = OrtRunner(artifacts[f"{name}.fp16.onnx"], opts.threads)
                fp16[name] = verify_onnx(reference, runner, check_sets, FP16_TOLERANCE)
                del runner
        result["fp16"] = {"tolerance": FP16_TOLERANCE, "models": fp16,
                          "max_rel_err": max(v["max_rel_err"] for v in fp16.values()),
                          "passed": all(v["passed"] for v in fp16.values())}
        if not result["fp16"]["passed"]:
            worst = max(fp16, key=lambda n: fp16[n]["max_rel_err"])
            result.update(passed=False, worst_model=f"{worst} (FP16)", worst_output=fp16[worst]["worst_output"],
                          max_rel_err=max(result["max_rel_err"], fp16[worst]["max_rel_err"]))
        return result

    def _verify_int8(self, result, references, artifacts, check_sets, opts, progress) -> dict:
        """The Q/DQ ONNX in onnxruntime on this CPU against torch FP32 (real samples where there are some): the
        check that needs no GPU. The engine's own numbers come when it is built."""
        return self.check_deployed(result, references, check_sets,
                                   lambda name: OrtRunner(artifacts[f"{name}.int8.onnx"], opts.threads),
                                   "INT8 Q/DQ ONNX (onnxruntime, CPU)", progress)

    def deployed_runner(self, artifacts, name, opts):
        """The INT8 Q/DQ ONNX in onnxruntime (CPU): its accuracy on the validation data before any engine exists."""
        path = artifacts.get(f"{name}.int8.onnx")
        return OrtRunner(path, opts.threads) if path else None

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        out_dir = Path(artifacts[PLAN_FILE]).parent
        return build_and_benchmark(out_dir, opts, progress)


def build_and_benchmark(out_dir: Path, opts, progress) -> dict:
    """Build every planned engine in `out_dir` (timing cache reused), then time them in alternating chunks."""
    spec = json.loads((out_dir / PLAN_FILE).read_text())
    target = trt_backend.target_spec(spec["target"])
    builds, runners = {}, {}
    for name, entry in spec["models"].items():
        profiles = entry["plan"]["optimization_profiles"]
        batch = profiles[0][next(iter(profiles[0]))] if profiles else None
        settings = trt_backend.BuildSettings(target, input_shapes={k: tuple(v) for k, v in spec["input_shapes"].items()},
                                             sparse_weights="SPARSE_WEIGHTS" in entry["plan"]["builder_flags"],
                                             dynamic_batch=(batch["min"][0], batch["opt"][0], batch["max"][0]) if batch else None)
        engine = out_dir / entry["engine"]
        if engine.exists() and (out_dir / f"{name}.build.json").exists():  # restored from the compile cache
            builds[name] = {**json.loads((out_dir / f"{name}.build.json").read_text()), "reused": True}
        else:
            with progress.stage(f"engine_{name}", f"building {name} TensorRT engine"):
                builds[name] = trt_backend.build_engine(out_dir / entry["onnx"], settings, engine)
            (out_dir / f"{name}.build.json").write_text(json.dumps(builds[name], default=str) + "\n")
        runners[name] = trt_backend.TrtRunner(out_dir / entry["engine"])
    samples = {name: [] for name in runners}
    rounds = max(1, opts.min_iters // 10) * 10
    with progress.stage("benchmark", f"benchmarking {' vs '.join(runners)} engines (CUDA events)"):
        for name, runner in runners.items():
            runner.benchmark(warmup=opts.warmup * 4, iters=1)
        for _ in range(rounds):
            for name, runner in runners.items():
                samples[name].extend(runner.benchmark(warmup=2, iters=20))
    stats = {name: summarize(s) for name, s in samples.items()}
    return {"stats": stats, "warnings": high_variance_warnings(stats),
            "engines": {n: {k: b[k] for k in ("engine", "bytes", "build_seconds", "sparse_layers", "num_layers",
                                               "timing_cache", "tensorrt_version")} for n, b in builds.items()},
            "settings": {"backend": "tensorrt", "timer": "CUDA events", "cuda_graph":
                         {n: r.used_cuda_graph for n, r in runners.items()}, "interleaved": "chunks of 20",
                         "iterations": len(next(iter(samples.values())))}}
