"""torch-cuda target: the model on a CUDA GPU in fp16 or bf16 (channels_last for 4-D inputs), compiled
by torch.compile with CUDA graphs (mode reduce-overhead) so the timing measures the device rather than
Python's kernel launches, 2:4 Linear weights as semi-structured tensors only where measured faster
(semi_structured.py), and interleaved CUDA-event benchmarking.

The GPU-free parts (placement, the compile mode, quiet compile, the interleaving loop) take their device
from DEVICE / _probe_gpu, so they are tested on a CPU-only machine.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn as nn

from prune2deploy.errors import MissingDependency, P2DError, UserError

from prune2deploy.backends.torch_cuda import semi_structured

FINISH_HINT = "run the same p2d compile on a machine with a CUDA GPU"
SPARSE_MIN_CAPABILITY = (8, 0)  # sparse tensor cores: Ampere and newer
DEVICE = "cuda"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
WARM_RUNS = 3  # CUDA graph trees: the 1st run warms up, the 2nd records the graph, the 3rd replays it
_QUIET_INDUCTOR = {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}


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
            f"tensor cores, Ampere (8.0) or newer is needed; run the same p2d compile on such a machine"
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


# ---------------------------------------------------------------- prepare / compile


def compile_mode(cuda_graphs: bool = True, autotune: bool = False) -> str:
    """torch.compile mode: CUDA graphs unless turned off; autotuning every GEMM/conv only when asked."""
    return {(True, False): "reduce-overhead", (True, True): "max-autotune",
            (False, False): "default", (False, True): "max-autotune-no-cudagraphs"}[(bool(cuda_graphs), bool(autotune))]


def uses_channels_last(values) -> bool:
    """True when any floating input is 4-D (NCHW): then model and inputs go channels_last."""
    if isinstance(values, torch.Tensor):
        return values.is_floating_point() and values.dim() == 4
    if isinstance(values, dict):
        values = list(values.values())
    return isinstance(values, (list, tuple)) and any(uses_channels_last(v) for v in values)


def to_device(value, dtype: torch.dtype, channels_last: bool = False):
    """Tensors (also in tuples/lists/dicts) on DEVICE; floating ones cast to dtype, 4-D ones channels_last."""
    if isinstance(value, torch.Tensor):
        value = value.to(DEVICE)
        if value.is_floating_point():
            value = value.to(dtype)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, dtype, channels_last) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, dtype, channels_last) for k, v in value.items()}
    return value


def prepare(model: nn.Module, args: tuple, kwargs: dict | None = None, dtype: str = "fp16",
            decisions: list[dict] | None = None) -> tuple[nn.Module, tuple, dict, dict]:
    """A copy of the model and the inputs on DEVICE in `dtype` (channels_last for 4-D inputs), with the
    Linear weights that `decisions` (semi_structured.decide) marks "2:4" as semi-structured tensors.
    Returns (model, args, kwargs, placement facts); the caller's model is left as it was."""
    sparse = any(d["decision"] == "2:4" for d in decisions or [])
    _require(sparse)
    torch_dtype = DTYPES[dtype]
    channels_last = uses_channels_last((args, kwargs or {}))
    model = copy.deepcopy(model).eval().to(device=DEVICE, dtype=torch_dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    converted = semi_structured.convert(model, decisions) if sparse else 0
    return (model, to_device(tuple(args), torch_dtype, channels_last), to_device(dict(kwargs or {}), torch_dtype,
            channels_last), {"dtype": str(torch_dtype).replace("torch.", ""), "channels_last": channels_last,
                             "semi_structured_layers": converted})


def decide_2to4(model: nn.Module, args: tuple, kwargs: dict | None, dtype: str = "fp16",
                margin: float = semi_structured.DEFAULT_MARGIN, measure: Callable | None = None) -> dict:
    """Which Linear layers of a 2:4-masked model run faster semi-structured on this GPU, each measured
    on its real GEMM shape (semi_structured.decide; `measure` defaults to the device's CUDA timing)."""
    _require(True)
    torch_dtype = DTYPES[dtype]
    placed, args, kwargs, _ = prepare(model, args, kwargs, dtype)
    shapes = semi_structured.linear_gemm_shapes(placed, args, kwargs)
    backends = semi_structured.backends_here()
    candidates = semi_structured.linear_candidates(placed, torch_dtype, backends)
    del placed
    result = semi_structured.decide(candidates, shapes, measure or semi_structured.device_gemm_measure(torch_dtype),
                                    margin)
    return {"dtype": dtype, "backends": list(backends), **result}


@contextmanager
def quiet_compile():
    """Dynamo/Inductor stay silent (no autotune tables, no warnings) unless the prune2deploy logger is at
    DEBUG (p2d --debug sets it)."""
    if logging.getLogger("prune2deploy").isEnabledFor(logging.DEBUG):
        yield
        return
    from torch._inductor import config as inductor_config

    loggers = [logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), inductor_config.patch(
                {k: v for k, v in _QUIET_INDUCTOR.items() if hasattr(inductor_config, k)}):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def compile_model(model: nn.Module, args: tuple, kwargs: dict | None = None, cuda_graphs: bool = True,
                  autotune: bool = False, warm_runs: int = WARM_RUNS) -> Callable:
    """torch.compile the model and run it `warm_runs` times, so the real compilation (and the CUDA graph
    capture) happens here and not inside the timed benchmark."""
    _require()
    kwargs = kwargs or {}
    mode = compile_mode(cuda_graphs, autotune)
    with quiet_compile():
        compiled = torch.compile(model, mode=mode)
        if cuda_graphs:  # each call is a new step: CUDA graph trees may reuse the previous call's output memory
            graphed = compiled

            def compiled(*call_args, **call_kwargs):
                torch.compiler.cudagraph_mark_step_begin()
                return graphed(*call_args, **call_kwargs)
        try:
            with torch.no_grad():
                for _ in range(warm_runs):
                    compiled(*args, **kwargs)
            torch.cuda.synchronize()
        except Exception as exc:  # dynamo/inductor failures carry long traces; keep the cause
            raise P2DError(f"torch.compile (mode {mode}) failed: {type(exc).__name__}: "
                           f"{(str(exc).strip().splitlines() or [''])[0][:300]}",
                           "try --no-cuda-graphs, or --debug for the compiler's log") from exc
    return compiled


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


def interleaved_runs(models: dict[str, Callable], inputs: tuple, warmup: int, iters: int, make_timer: Callable,
                     kwargs: dict | None = None, budget_s: float = 0.0, max_iters: int = 10_000) -> dict[str, list[float]]:
    """Run variants round-robin (A B C, B C A, C A B, ...) so drift in clocks/thermals hits all alike:
    at least `iters` rounds, more while `budget_s` seconds have not passed (up to max_iters)."""
    if not models:
        raise UserError("nothing to benchmark")
    names, kwargs = list(models), kwargs or {}
    timers = {name: make_timer() for name in names}
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                models[name](*inputs, **kwargs)
        started, round_index = time.perf_counter(), 0
        while round_index < max_iters and (round_index < iters or time.perf_counter() - started < budget_s):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                timers[name].start()
                models[name](*inputs, **kwargs)
                timers[name].stop()
            round_index += 1
    return {name: timers[name].samples_ms() for name in names}


def benchmark(models: dict[str, Callable], inputs: tuple, kwargs: dict | None = None, warmup: int = 10,
              iters: int = 50, budget_s: float = 0.0) -> dict[str, list[float]]:
    """Per-variant latency samples (ms) timed with CUDA events, variants interleaved."""
    _require()
    return interleaved_runs(models, inputs, warmup, iters, _CudaEventTimer, kwargs, budget_s)
