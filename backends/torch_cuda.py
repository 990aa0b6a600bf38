"""torch-cuda target: FP16 on CUDA, 2:4 Linear weights as semi-structured sparse tensors,
torch.compile / AOTInductor, and interleaved CUDA-event benchmarking.

The GPU-free parts (2:4 pattern check, semi-structured eligibility, the interleaving
loop) are pure so they can be tested on a CPU-only machine.
"""
from __future__ import annotations

import os
from collections import namedtuple
from typing import Callable

import torch
import torch.nn as nn

from prune2deploy.errors import MissingDependency, P2DError, UserError

FINISH_HINT = "finish on a machine with a CUDA GPU with `p2d build OUT_DIR`"
SPARSE_MIN_CAPABILITY = (8, 0)  # sparse tensor cores: Ampere and newer

_Limits = namedtuple("_Limits", "sparse_min_rows sparse_min_cols dense_min_rows dense_min_cols")
# Copy of torch 2.13's tables (torch/sparse/semi_structured.py), used only if torch moves them.
_FALLBACK_LIMITS = {
    "cusparselt": {
        torch.int8: _Limits(32, 32, 16, 16),
        torch.float16: _Limits(16, 16, 8, 8),
        torch.bfloat16: _Limits(16, 16, 8, 8),
    },
    "cutlass": {
        torch.int8: _Limits(16, 128, 16, 16),
        torch.float16: _Limits(32, 64, 8, 8),
        torch.bfloat16: _Limits(32, 64, 8, 8),
        torch.float32: _Limits(32, 32, 4, 4),
    },
}


# ---------------------------------------------------------------- availability


def availability_reason(gpu: tuple[str, tuple[int, int]] | None, sparse_2to4: bool = False) -> str:
    """Why torch-cuda cannot run here ("" when it can). Pure."""
    if gpu is None:
        build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"torch-cuda: {build}; {FINISH_HINT}"
    name, capability = gpu
    if sparse_2to4 and tuple(capability) < SPARSE_MIN_CAPABILITY:
        return (
            f"torch-cuda 2:4: {name} (compute capability {capability[0]}.{capability[1]}) has no sparse "
            f"tensor cores, Ampere (8.0) or newer is needed; finish on such a machine with `p2d build OUT_DIR`"
        )
    return ""


def _probe_gpu() -> tuple[str, tuple[int, int]] | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def availability(sparse_2to4: bool = False) -> tuple[bool, str]:
    """Can torch-cuda run here? (ok, reason); the reason says what is missing and how to finish."""
    reason = availability_reason(_probe_gpu(), sparse_2to4)
    return (not reason, reason or "torch-cuda: CUDA GPU present")


def _require(sparse_2to4: bool = False) -> None:
    ok, reason = availability(sparse_2to4)
    if not ok:
        raise MissingDependency(reason)


# ---------------------------------------------------------------- 2:4 eligibility


def semi_structured_backend() -> str:
    """"cusparselt" when this torch has cuSPARSELt, else "cutlass" (what to_sparse_semi_structured picks)."""
    has = getattr(getattr(torch.backends, "cusparselt", None), "is_available", lambda: False)()
    return "cusparselt" if has else "cutlass"


def semi_structured_limits(backend: str) -> dict:
    """dtype -> minimum/multiple shape limits of a semi-structured backend, read from torch."""
    cls_name = {"cusparselt": "SparseSemiStructuredTensorCUSPARSELT", "cutlass": "SparseSemiStructuredTensorCUTLASS"}
    cls = getattr(torch.sparse, cls_name[backend], None)
    table = getattr(cls, "_DTYPE_SHAPE_CONSTRAINTS", None)
    if not table:
        return _FALLBACK_LIMITS[backend]
    return {dtype: _Limits(*limits) for dtype, limits in table.items()}


def semi_structured_eligibility(shape: tuple[int, ...], dtype: torch.dtype, backend: str = "cusparselt") -> str | None:
    """None when a Linear weight of this shape/dtype can become a semi-structured tensor, else why not."""
    if len(shape) != 2:
        return f"weight is {len(shape)}-D, semi-structured sparsity needs a 2-D weight"
    limits = semi_structured_limits(backend)
    if dtype not in limits:
        names = ", ".join(str(d).replace("torch.", "") for d in limits)
        return f"dtype {str(dtype).replace('torch.', '')} not supported by {backend} (supports {names})"
    rows, cols = shape
    lim = limits[dtype]
    if rows < lim.sparse_min_rows or rows % lim.sparse_min_rows:
        return f"out_features {rows} is not a multiple of {lim.sparse_min_rows} ({backend}, {dtype})"
    if cols < lim.sparse_min_cols or cols % lim.sparse_min_cols:
        return f"in_features {cols} is not a multiple of {lim.sparse_min_cols} ({backend}, {dtype})"
    return None


def has_2to4_pattern(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive input-axis weights holds at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, 4)
    return bool(((groups != 0).sum(dim=-1) <= 2).all())


def linear_2to4_report(model: nn.Module, dtype: torch.dtype = torch.float16, backend: str | None = None) -> list[dict]:
    """For each nn.Linear: would it be converted to semi-structured 2:4, and if not, why. Pure (CPU ok)."""
    backend = backend or semi_structured_backend()
    report = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight
        reason = semi_structured_eligibility(tuple(weight.shape), dtype, backend)
        if reason is None and not has_2to4_pattern(weight):
            reason = "weights do not hold the 2:4 pattern (prune with a 2:4 mask first)"
        report.append({"name": name, "shape": list(weight.shape), "converted": reason is None, "reason": reason})
    return report


# ---------------------------------------------------------------- prepare / compile


def _to_device_half(value):
    if isinstance(value, torch.Tensor):
        value = value.cuda()
        return value.half() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device_half(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_device_half(v) for k, v in value.items()}
    return value


def prepare(model: nn.Module, example_inputs: tuple, sparse_2to4: bool = False) -> tuple[nn.Module, tuple, list[dict]]:
    """Move model and inputs to CUDA FP16; with sparse_2to4, swap eligible Linear weights to
    torch.sparse.to_sparse_semi_structured. Returns (model, inputs, per-Linear report)."""
    _require(sparse_2to4)
    model = model.eval().half().cuda()
    inputs = _to_device_half(tuple(example_inputs))
    if not sparse_2to4:
        return model, inputs, []
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    backend = semi_structured_backend()
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    report = linear_2to4_report(model, torch.float16, backend)
    modules = dict(model.named_modules())
    for entry in report:
        if not entry["converted"]:
            continue
        linear = modules[entry["name"]]
        try:
            sparse = to_sparse_semi_structured(linear.weight.detach().contiguous())
        except (RuntimeError, NotImplementedError) as exc:
            entry.update(converted=False, reason=f"to_sparse_semi_structured failed: {exc}")
            continue
        linear.weight = nn.Parameter(sparse, requires_grad=False)
        entry["backend"] = backend
    return model, inputs, report


def compile_model(
    model: nn.Module,
    example_inputs: tuple,
    mode: str | None = "max-autotune-no-cudagraphs",
    aoti_package_path: str | os.PathLike | None = None,
) -> Callable:
    """torch.compile the model, or with aoti_package_path, export and package it with AOTInductor
    (a .pt2 artifact loadable without Python model code) and return the loaded package."""
    _require()
    if aoti_package_path is None:
        return torch.compile(model, mode=mode)
    from torch._inductor import aoti_compile_and_package, aoti_load_package

    try:
        with torch.no_grad():
            exported = torch.export.export(model, tuple(example_inputs))
            path = aoti_compile_and_package(exported, package_path=str(aoti_package_path))
    except Exception as exc:  # export/inductor failures carry long traces; keep the cause
        raise P2DError(f"AOTInductor packaging failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return aoti_load_package(path)


# ---------------------------------------------------------------- benchmark


class _CudaEventTimer:
    """start()/stop() pairs recorded as CUDA events on the current stream; read after one sync."""

    def __init__(self):
        self.pairs = []

    def start(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.pairs.append([event, None])

    def stop(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.pairs[-1][1] = event

    def samples_ms(self) -> list[float]:
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in self.pairs]


def interleaved_runs(
    models: dict[str, Callable], inputs: tuple, warmup: int, iters: int, make_timer: Callable
) -> dict[str, list[float]]:
    """Run variants round-robin (A B C, B C A, C A B, ...) so drift in clocks/thermals hits all alike."""
    if not models:
        raise UserError("nothing to benchmark")
    names = list(models)
    timers = {name: make_timer() for name in names}
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                models[name](*inputs)
        for round_index in range(iters):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                timers[name].start()
                models[name](*inputs)
                timers[name].stop()
    return {name: timers[name].samples_ms() for name in names}


def benchmark(models: dict[str, Callable], inputs: tuple, warmup: int = 10, iters: int = 50) -> dict[str, list[float]]:
    """Per-variant latency samples (ms) timed with CUDA events, variants interleaved."""
    _require()
    return interleaved_runs(models, inputs, warmup, iters, _CudaEventTimer)
