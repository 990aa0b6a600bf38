"""2:4 on torch-cuda, kept only where it is measured faster: for each Linear that can hold
semi-structured weights, its real GEMM shape is timed dense vs semi-structured (cuSPARSELt, and
CUTLASS where the GPU takes it) on the device, and the layer goes 2:4 only when the sparse kernel
wins by a margin. On an H100 cuSPARSELt is usually far slower (pytorch/pytorch#153825), so the
honest outcome there is often "kept dense".

`decide` is pure over a measuring function, so the rule is tested on a CPU with recorded timings;
`device_gemm_measure` is that function on a CUDA GPU.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from prune2deploy.passes.nm import nm_mask

BACKENDS = ("cusparselt", "cutlass")
DEFAULT_MARGIN = 0.05  # 2:4 must be at least 5% faster than the dense GEMM
NO_LAYER_FASTER = "2:4 kept dense on this GPU: no layer faster"

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
_CLASS_NAMES = {"cusparselt": "SparseSemiStructuredTensorCUSPARSELT", "cutlass": "SparseSemiStructuredTensorCUTLASS"}


class GemmShape(namedtuple("GemmShape", "m k n bias")):
    """y[m, n] = x[m, k] @ w[n, k].T (+ bias): one Linear call, m = rows of its input (batch x tokens)."""

    def __str__(self):
        return f"{self.m}x{self.k}x{self.n}"


# ---------------------------------------------------------------- eligibility (pure)


def cusparselt_available() -> bool:
    return bool(getattr(getattr(torch.backends, "cusparselt", None), "is_available", lambda: False)())


def backends_here() -> tuple[str, ...]:
    """Semi-structured backends worth trying in this torch (CUTLASS is always tried; sm_90 refuses it)."""
    return BACKENDS if cusparselt_available() else ("cutlass",)


def semi_structured_limits(backend: str) -> dict:
    """dtype -> minimum/multiple shape limits of a semi-structured backend, read from torch."""
    table = getattr(getattr(torch.sparse, _CLASS_NAMES[backend], None), "_DTYPE_SHAPE_CONSTRAINTS", None)
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


def linear_candidates(model: nn.Module, dtype: torch.dtype, backends: tuple[str, ...] = BACKENDS) -> list[dict]:
    """Each nn.Linear with the backends that accept it, or why none does. Pure (CPU ok)."""
    report = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        shape = tuple(module.weight.shape)
        refusals = {b: semi_structured_eligibility(shape, dtype, b) for b in backends}
        accepted = [b for b, why in refusals.items() if why is None]
        reason = None
        if not has_2to4_pattern(module.weight):
            reason = "weights do not hold the 2:4 pattern (prune with a 2:4 mask first)"
        elif not accepted:
            reason = "; ".join(refusals.values())
        report.append({"name": name, "shape": list(shape), "backends": accepted if reason is None else [],
                       "reason": reason})
    return report


def linear_gemm_shapes(model: nn.Module, args: tuple, kwargs: dict | None = None) -> dict[str, GemmShape]:
    """The GEMM each nn.Linear runs on these inputs (forward hooks, one forward pass, any device)."""
    shapes, hooks = {}, []

    def hook(name):
        def record(module, inputs, _output):
            x = inputs[0]
            shapes[name] = GemmShape(x.numel() // module.in_features, module.in_features, module.out_features,
                                     module.bias is not None)
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(*args, **(kwargs or {}))
    finally:
        for h in hooks:
            h.remove()
    return shapes


# ---------------------------------------------------------------- the decision (pure)


def decide(candidates: list[dict], shapes: dict[str, GemmShape],
           measure: Callable[[GemmShape, tuple[str, ...]], dict[str, float | str]],
           margin: float = DEFAULT_MARGIN) -> dict:
    """Per layer: 2:4 only when the best semi-structured kernel is >= (1 + margin) x faster than dense.

    `measure(shape, kinds)` returns {kind: ms per call, or a string saying why the kind could not run}
    for "dense" and each backend; each distinct (shape, backends) is measured once. Every Linear gets a
    decision with its reason and, when measured, both times.
    """
    measured: dict[tuple, dict] = {}
    decisions = []
    for layer in candidates:
        entry = {"name": layer["name"], "shape": layer["shape"], "decision": "dense"}
        shape = shapes.get(layer["name"])
        if layer["reason"]:
            decisions.append({**entry, "reason": layer["reason"]})
            continue
        if shape is None:
            decisions.append({**entry, "reason": "not called with the example inputs"})
            continue
        kinds = ("dense", *layer["backends"])
        if (shape, kinds) not in measured:
            measured[(shape, kinds)] = measure(shape, kinds)
        times = measured[(shape, kinds)]
        entry.update(gemm=str(shape), dense_ms=times["dense"],
                     sparse_ms={b: times[b] for b in layer["backends"] if isinstance(times[b], float)},
                     refused={b: times[b] for b in layer["backends"] if not isinstance(times[b], float)})
        decisions.append(_verdict(entry, margin))
    kept = [d["name"] for d in decisions if d["decision"] == "2:4"]
    timed = [d for d in decisions if "dense_ms" in d]
    if kept:
        backends = sorted({d["backend"] for d in decisions if d["decision"] == "2:4"})
        summary = f"2:4 on {len(kept)} of {len(timed)} timed Linear layers ({', '.join(backends)})"
    elif timed:
        summary = NO_LAYER_FASTER
    else:
        summary = "2:4 kept dense: no Linear layer can hold semi-structured weights (see the reasons)"
    return {"margin": margin, "decisions": decisions, "semi_structured_layers": len(kept),
            "timed_layers": len(timed), "kept": kept, "summary": summary}


def _verdict(entry: dict, margin: float) -> dict:
    dense, sparse = entry["dense_ms"], entry["sparse_ms"]
    if not sparse:
        refused = "; ".join(f"{b}: {why}" for b, why in entry["refused"].items())
        return {**entry, "reason": f"no semi-structured kernel ran this GEMM here ({refused})"}
    best = min(sparse, key=sparse.get)
    speedup = dense / sparse[best]
    entry = {**entry, "best_backend": best, "speedup": round(speedup, 4)}
    if speedup >= 1 + margin:
        return {**entry, "decision": "2:4", "backend": best,
                "reason": f"{best} {sparse[best]:.4f} ms vs dense {dense:.4f} ms: {speedup:.2f}x"}
    return {**entry, "reason": f"{best} {sparse[best]:.4f} ms vs dense {dense:.4f} ms: {speedup:.2f}x, "
                               f"not the {margin:.0%} faster needed"}


def whole_model_check(result: dict, sparse_stats: dict, twin_stats: dict) -> tuple[dict, dict]:
    """A 2:4 model never ships slower than its dense-weight twin (same weights, dense storage): when the
    model with semi-structured layers has the higher p50, every layer reverts to dense and the twin's
    timing is the one reported. Returns (result, the stats of the model that ships)."""
    sparse_ms, twin_ms = sparse_stats["p50"], twin_stats["p50"]
    result = {**result, "whole_model": {"semi_structured_p50_ms": sparse_ms, "dense_weights_p50_ms": twin_ms,
                                        "speedup": twin_ms / sparse_ms, "kept": sparse_ms <= twin_ms}}
    if sparse_ms <= twin_ms:
        return result, sparse_stats
    note = f"reverted: the whole model ran {sparse_ms:.4f} ms p50 with 2:4 vs {twin_ms:.4f} ms with dense weights"
    decisions = [{**d, "decision": "dense", "reason": f"{d['reason']}; {note}"} if d["decision"] == "2:4" else d
                 for d in result["decisions"]]
    return {**result, "decisions": decisions, "kept": [], "semi_structured_layers": 0,
            "summary": f"2:4 kept dense on this GPU: {note}"}, twin_stats


# ---------------------------------------------------------------- on the device


def semi_structured(weight: torch.Tensor, backend: str) -> torch.Tensor:
    """The weight as a semi-structured tensor of the given backend (cusparselt | cutlass)."""
    return getattr(torch.sparse, _CLASS_NAMES[backend]).from_dense(weight.detach().contiguous())


def convert(model: nn.Module, decisions: list[dict]) -> int:
    """Swap the weights of the layers decided "2:4" to semi-structured tensors; returns how many."""
    modules = dict(model.named_modules())
    for d in decisions:
        if d["decision"] == "2:4":
            linear = modules[d["name"]]
            linear.weight = nn.Parameter(semi_structured(linear.weight, d["backend"]), requires_grad=False)
    return sum(d["decision"] == "2:4" for d in decisions)


def device_gemm_measure(dtype: torch.dtype, rounds: int = 15, calls: int = 20,
                        device: str = "cuda") -> Callable[[GemmShape, tuple[str, ...]], dict[str, float | str]]:
    """measure(shape, kinds) on a CUDA GPU: the same 2:4-masked weight as a dense tensor and as each
    backend's semi-structured tensor, `calls` back-to-back GEMMs captured in a CUDA graph (eager when
    capture fails), kinds interleaved over `rounds` with a rotating order; median ms per call."""

    def measure(shape: GemmShape, kinds: tuple[str, ...]) -> dict[str, float | str]:
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape.m, shape.k, device=device, dtype=dtype, generator=generator)
        weight = torch.randn(shape.n, shape.k, device=device, dtype=dtype, generator=generator)
        weight = weight * nm_mask(weight, 2, 4).to(dtype)
        bias = torch.randn(shape.n, device=device, dtype=dtype, generator=generator) if shape.bias else None
        reference = F.linear(x, weight, bias)
        runs, result = {}, {}
        for kind in kinds:
            try:
                w = weight if kind == "dense" else semi_structured(weight, kind)
                out = F.linear(x, w, bias)
                if not torch.allclose(out.float(), reference.float(), rtol=2e-2, atol=2e-2):
                    result[kind] = "result differs from the dense GEMM"
                    continue
                runs[kind] = _replayable(lambda w=w: F.linear(x, w, bias), calls)
            except Exception as exc:  # a kernel that refuses this GPU/shape says so in its message
                result[kind] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
        samples = {kind: [] for kind in runs}
        names = list(runs)
        for r in range(rounds):
            shift = r % max(1, len(names))
            for kind in names[shift:] + names[:shift]:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                runs[kind]()
                end.record()
                end.synchronize()
                samples[kind].append(start.elapsed_time(end) / calls)
        result.update({kind: float(torch.tensor(s).median()) for kind, s in samples.items()})
        if "dense" not in result or isinstance(result["dense"], str):
            raise RuntimeError(f"the dense GEMM {shape} did not run: {result.get('dense')}")
        return result

    return measure


def _replayable(fn: Callable, calls: int) -> Callable:
    """`calls` calls of fn as one CUDA graph replay (launch overhead gone, as in the compiled model),
    or as a plain loop when the kernel cannot be captured."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        return graph.replay
    except Exception:
        torch.cuda.synchronize()

        def loop():
            for _ in range(calls):
                fn()
        loop()
        return loop
