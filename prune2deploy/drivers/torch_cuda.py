"""Target torch-cuda: the models compiled by torch.compile on a CUDA GPU in FP16, 2:4 Linear weights as
semi-structured sparse tensors, timed interleaved with CUDA events. FP32 ONNX is still exported and verified."""
from __future__ import annotations

from prune2deploy.backends import torch_cuda
from prune2deploy.backends.ort import device_description

from ..timing import high_variance_warnings, summarize
from .base import ExportingDriver


class TorchCudaDriver(ExportingDriver):
    def __init__(self):
        self.models = {}
        self.sparse = False

    def availability(self) -> tuple[bool, str]:
        ok, reason = torch_cuda.availability(self.sparse)
        return ok, reason.replace("with `p2d build OUT_DIR`", "by running the same p2d compile there")

    def device(self) -> str:
        gpu = torch_cuda._probe_gpu()
        return f"{gpu[0]} (sm_{gpu[1][0]}{gpu[1][1]})" if gpu else f"no GPU here; prepared on {device_description()}"

    def build(self, models, ctx, work, progress, report) -> dict:
        self.models, self.sparse = models, bool(ctx.records.get("sparsity"))
        return super().build(models, ctx, work, progress, report)

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        compiled, layouts = {}, {}
        for name, model in self.models.items():
            with progress.stage(f"compile_{name}", f"torch.compile {name} (fp16, CUDA)"):
                prepared, cuda_inputs, layouts[name] = torch_cuda.prepare(
                    model, inputs.args or tuple(inputs.kwargs.values()), sparse_2to4=name.endswith("_2to4"))
                compiled[name] = torch_cuda.compile_model(prepared, cuda_inputs)
        with progress.stage("benchmark", f"benchmarking {' vs '.join(compiled)} (CUDA events, interleaved)"):
            samples = torch_cuda.benchmark(compiled, cuda_inputs, warmup=opts.warmup * 2, iters=max(opts.min_iters, 50))
        stats = {name: summarize(s) for name, s in samples.items()}
        return {"stats": stats, "warnings": high_variance_warnings(stats), "semi_structured": layouts,
                "settings": {"backend": "torch.compile", "dtype": "float16", "timer": "CUDA events",
                             "interleaved": True, "iterations": len(next(iter(samples.values())))}}
