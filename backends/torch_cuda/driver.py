"""Target torch-cuda: each model compiled by torch.compile on a CUDA GPU (fp16/bf16, CUDA graphs by
default, channels_last for 4-D inputs) and timed interleaved with CUDA events. With --sparsity 2:4 each
eligible Linear is timed dense vs semi-structured on its real GEMM shape and goes 2:4 only where faster
(`sparsity.decisions`); the 2:4 model is also timed against its dense-weight twin and never ships slower.
FP32 ONNX is still exported and verified."""
from __future__ import annotations

from prune2deploy.backends.torch_cuda import semi_structured, runner as torch_cuda
from prune2deploy.backends.ort_cpu.runner import device_description

from prune2deploy.runtime.timing import high_variance_warnings, summarize
from prune2deploy.backends.onnx.driver import ExportingDriver

SPARSE = "pruned_2to4"
TWIN = "pruned_2to4_dense_weights"  # same masked weights, dense storage: what 2:4 must beat


class TorchCudaDriver(ExportingDriver):
    runs_torch_models = True

    def __init__(self):
        self.models = {}
        self.sparse = False

    def availability(self) -> tuple[bool, str]:
        return torch_cuda.availability(self.sparse)

    def precisions(self, options=None) -> tuple[str, ...]:
        return (options.dtype if options else "fp16",)

    def auto_precision(self, options=None) -> tuple[str, str]:
        return (options.dtype if options else "fp16"), "torch-cuda computes in --dtype"

    def device(self) -> str:
        gpu = torch_cuda._probe_gpu()
        return f"{gpu[0]} (sm_{gpu[1][0]}{gpu[1][1]})" if gpu else f"no GPU here; prepared on {device_description()}"

    def build(self, models, ctx, work, progress, report) -> dict:
        self.models, self.sparse = models, bool(ctx.records.get("sparsity"))
        return super().build(models, ctx, work, progress, report)

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        args, kwargs = inputs.args, inputs.kwargs
        mode = torch_cuda.compile_mode(opts.cuda_graphs, opts.autotune)
        variants = {name: (model, None) for name, model in self.models.items()}
        sparsity = None
        if SPARSE in self.models:
            with progress.stage("sparsity_decisions", "timing each 2:4 Linear's GEMM, dense vs semi-structured"):
                sparsity = torch_cuda.decide_2to4(self.models[SPARSE], args, kwargs, opts.dtype, opts.sparsity_margin)
            variants[SPARSE] = (self.models[SPARSE], sparsity["decisions"])
            if sparsity["kept"]:
                variants[TWIN] = (self.models[SPARSE], None)
        compiled, placement, compile_s = {}, {}, {}
        for name, (model, decisions) in variants.items():
            stage = f"compile_{name}"
            with progress.stage(stage, f"torch.compile {name} ({opts.dtype}, mode {mode}) and first runs"):
                prepared, device_args, device_kwargs, placement[name] = torch_cuda.prepare(
                    model, args, kwargs, opts.dtype, decisions)
                compiled[name] = torch_cuda.compile_model(prepared, device_args, device_kwargs,
                                                          cuda_graphs=opts.cuda_graphs, autotune=opts.autotune)
            compile_s[name] = progress.times[stage]
        with progress.stage("benchmark", f"benchmarking {' vs '.join(compiled)} (CUDA events, interleaved)"):
            samples = torch_cuda.benchmark(compiled, device_args, device_kwargs, warmup=opts.warmup * 2,
                                           iters=opts.min_iters, budget_s=opts.bench_seconds)
        batch = next(iter(inputs.tensors())).shape[0] if inputs.tensors() else 1
        stats = {name: summarize(s, batch) for name, s in samples.items()}
        twin = stats.pop(TWIN, None)
        if sparsity and twin:
            sparsity, stats[SPARSE] = semi_structured.whole_model_check(sparsity, stats[SPARSE], twin)
        warnings = high_variance_warnings(stats)
        if opts.autotune:
            warnings.append(f"--autotune: compiling took {sum(compile_s.values()):.0f} s for {len(compile_s)} "
                            f"models (autotuning every GEMM/conv; without --autotune the mode is "
                            f"{torch_cuda.compile_mode(opts.cuda_graphs, False)})")
        bench = {"stats": stats, "warnings": warnings,
                 "settings": {"backend": "torch.compile", "mode": mode, "cuda_graphs": opts.cuda_graphs,
                              "autotune": opts.autotune, "dtype": placement["dense"]["dtype"],
                              "channels_last": placement["dense"]["channels_last"], "timer": "CUDA events",
                              "interleaved": True, "iterations": len(next(iter(samples.values()))),
                              "compile_s": compile_s, "batch": batch}}
        if sparsity:
            bench["sparsity"] = sparsity
        return bench
