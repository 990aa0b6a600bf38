"""TensorRT backend: targets, build plan, engine build, layer inspection and timing.

Everything TensorRT-specific is imported lazily. The build is split in two so the
part that needs no GPU is testable anywhere: `plan_build` is a pure description of
what the builder will be asked, and `apply_plan(trt, ...)` translates it into API
calls on whatever `trt` module it is given (the real one, or a recording fake).

Precision: TensorRT 11 removed BuilderFlag.FP16/INT8; reduced precision comes from
a strongly typed network parsed from an FP16 ONNX (see backends/fp16.py). So the
plan never asks for a precision flag, on TensorRT 10 or 11.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune2deploy.errors import MissingDependency, P2DError, UserError

FINISH_HINT = "finish on a machine that has them with `p2d build OUT_DIR`"


@dataclass(frozen=True)
class TrtTargetSpec:
    """One TensorRT target: portability level, GPU it needs, channel alignment it prefers."""

    name: str
    hardware_compatibility: str | None  # HardwareCompatibilityLevel member name, None = this GPU only
    compute_capability: tuple[int, int] | None  # minimum (major, minor); None = whatever GPU is present
    round_to: int  # channel multiple that keeps FP16 tensor-core tiles full
    description: str

    def channel_multiple(self, sparse: bool) -> int:
        """Channel alignment to prune to: 2:4 sparse kernels want multiples of 16."""
        return max(self.round_to, 16) if sparse else self.round_to


TRT_TARGETS: dict[str, TrtTargetSpec] = {
    "trt": TrtTargetSpec(
        "trt", None, None, 8, "engine for the GPU it is built on (fastest, not portable)"
    ),
    "trt-ampere": TrtTargetSpec(
        "trt-ampere", "AMPERE_PLUS", (8, 0), 8,
        "portable engine for Ampere and newer GPUs (HardwareCompatibilityLevel.AMPERE_PLUS)",
    ),
    "trt-hopper": TrtTargetSpec(
        "trt-hopper", None, (9, 0), 8, "engine built on and for Hopper (compute capability 9.x)"
    ),
}


def target_spec(name: str) -> TrtTargetSpec:
    try:
        return TRT_TARGETS[name]
    except KeyError:
        raise UserError(
            f"unknown TensorRT target {name!r}", hint=f"use one of {', '.join(TRT_TARGETS)}"
        ) from None


# ---------------------------------------------------------------- availability


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependency(availability_reason(None, _probe_gpu(), "trt")) from exc
    return trt


def _probe_trt_version() -> str | None:
    try:
        import tensorrt as trt
    except Exception:
        return None
    return getattr(trt, "__version__", "unknown")


def _probe_gpu() -> tuple[str, tuple[int, int]] | None:
    """(device name, compute capability) of CUDA device 0, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def availability_reason(
    trt_version: str | None, gpu: tuple[str, tuple[int, int]] | None, target: str = "trt"
) -> str:
    """The one-line reason a target cannot build here, or "" when it can. Pure."""
    spec = target_spec(target)
    missing = []
    if trt_version is None:
        missing.append("TensorRT is not installed (pip install 'prune2deploy[tensorrt]' on a CUDA machine)")
    if gpu is None:
        missing.append("no CUDA GPU is visible")
    elif spec.compute_capability and tuple(gpu[1]) < spec.compute_capability:
        want = ".".join(map(str, spec.compute_capability))
        have = ".".join(map(str, gpu[1]))
        missing.append(f"{spec.name} needs compute capability >= {want}, {gpu[0]} has {have}")
    elif spec.name == "trt-hopper" and gpu[1][0] != 9:
        missing.append(f"trt-hopper needs a Hopper GPU (9.x), {gpu[0]} is {gpu[1][0]}.{gpu[1][1]}")
    if not missing:
        return ""
    return f"{target}: {'; '.join(missing)}; {FINISH_HINT}"


def availability(target: str = "trt") -> tuple[bool, str]:
    """Can `target` build here? (ok, reason); the reason says what is missing and how to finish."""
    reason = availability_reason(_probe_trt_version(), _probe_gpu(), target)
    return (not reason, reason or f"{target}: TensorRT and a suitable CUDA GPU are present")


# ---------------------------------------------------------------- build plan


@dataclass
class BuildSettings:
    """What the user asked for one engine build."""

    target: TrtTargetSpec
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # batch first
    sparse_weights: bool = False
    strongly_typed: bool = True
    dynamic_batch: tuple[int, int, int] | None = None  # (min, opt, max)
    workspace_bytes: int = 4 << 30
    timing_cache_path: str | None = None  # None = beside the engine
    fp32_layers: list[str] = field(default_factory=list)  # kept FP32 by the ONNX (fp16.py)


def default_timing_cache_path(engine_path: str | os.PathLike) -> Path:
    """The timing cache lives beside its engine and is reused by later builds there."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.stem + ".timing.cache")


def _profiles(settings: BuildSettings) -> list[dict[str, dict[str, list[int]]]]:
    if settings.dynamic_batch is None:
        return []
    lo, opt, hi = settings.dynamic_batch
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"dynamic batch must satisfy 1 <= min <= opt <= max, got {settings.dynamic_batch}")
    if not settings.input_shapes:
        raise UserError("dynamic batch needs the input shapes to build an optimization profile")
    profile = {
        name: {key: [b, *shape[1:]] for key, b in (("min", lo), ("opt", opt), ("max", hi))}
        for name, shape in settings.input_shapes.items()
    }
    return [profile]


def plan_build(settings: BuildSettings, engine_path: str | os.PathLike | None = None) -> dict:
    """Pure description of exactly what the TensorRT builder will be asked."""
    spec = settings.target
    if settings.timing_cache_path:
        cache = str(settings.timing_cache_path)
    elif engine_path is not None:
        cache = str(default_timing_cache_path(engine_path))
    else:
        cache = None
    return {
        "target": spec.name,
        "network_flags": ["STRONGLY_TYPED"] if settings.strongly_typed else [],
        "builder_flags": ["SPARSE_WEIGHTS"] if settings.sparse_weights else [],
        "hardware_compatibility_level": spec.hardware_compatibility,
        "required_compute_capability": list(spec.compute_capability) if spec.compute_capability else None,
        "memory_pool_limits": {"WORKSPACE": int(settings.workspace_bytes)},
        "profiling_verbosity": "DETAILED",
        "optimization_profiles": _profiles(settings),
        "timing_cache": cache,
        "precision": "from the ONNX types (strongly typed network); no FP16/INT8 builder flag",
        "fp32_layers": list(settings.fp32_layers),
    }


def network_creation_flags(trt, plan: dict) -> int:
    """Bitmask for builder.create_network(); flags this TensorRT no longer has are skipped.

    (TensorRT 11 keeps STRONGLY_TYPED only for compatibility: strong typing is always on.)
    """
    flags = 0
    for name in plan["network_flags"]:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:
            flags |= 1 << int(member)
    return flags


def apply_plan(trt, builder, config, network, plan: dict) -> dict:
    """Translate a plan into calls on a real (or fake) TensorRT builder config.

    Returns {"timing_cache_reused": bool, "timing_cache": cache object or None}.
    """
    for name in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    level = plan["hardware_compatibility_level"]
    if level is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    for pool, limit in plan["memory_pool_limits"].items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), limit)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan["profiling_verbosity"])

    dynamic_inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            dynamic_inputs[tensor.name] = tuple(tensor.shape)
    for shapes in plan["optimization_profiles"]:
        unknown = sorted(set(shapes) - {network.get_input(i).name for i in range(network.num_inputs)})
        if unknown:
            raise UserError(f"profile names inputs the network does not have: {', '.join(unknown)}")
        missing = sorted(set(dynamic_inputs) - set(shapes))
        if missing:
            raise UserError(f"dynamic inputs without a profile shape: {', '.join(missing)}")
        profile = builder.create_optimization_profile()
        for name, mmo in shapes.items():
            profile.set_shape(name, mmo["min"], mmo["opt"], mmo["max"])
        config.add_optimization_profile(profile)
    if dynamic_inputs and not plan["optimization_profiles"]:
        raise UserError(
            f"the ONNX has dynamic dimensions on {', '.join(dynamic_inputs)} but no profile was planned",
            hint="pass a dynamic batch (min, opt, max) or export with static shapes",
        )

    reused, cache = False, None
    if plan["timing_cache"]:
        path = Path(plan["timing_cache"])
        blob = path.read_bytes() if path.is_file() else b""
        reused = bool(blob)
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    return {"timing_cache_reused": reused, "timing_cache": cache}


# ---------------------------------------------------------------- build


def _atomic_write(path: Path, data) -> int:
    from prune2deploy.artifacts.outdir import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    view = memoryview(data)
    write_atomic(path, view.tobytes())
    return view.nbytes


def _capturing_logger(trt, lines: list[str], echo_min=None):
    """A trt.ILogger that keeps INFO-and-worse lines (sparsity report included)."""

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.INFO):
                lines.append(msg)
            if int(severity) <= int(echo_min if echo_min is not None else trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}")

    return CapturingLogger()


_SPARSITY_LINE = re.compile(
    r"\(Sparsity\)\s*(Layers eligible for sparse math|TRT inference plan picked sparse implementation for layers):\s*(.*)"
)


def parse_sparsity_log(lines: list[str]) -> dict[str, list[str]]:
    """Layers TensorRT found 2:4-eligible and those it picked sparse tactics for, from the build log."""
    found = {"eligible": [], "picked": []}
    for line in lines:
        match = _SPARSITY_LINE.search(line)
        if match:
            key = "eligible" if match.group(1).startswith("Layers eligible") else "picked"
            found[key].extend(n.strip() for n in match.group(2).split(",") if n.strip())
    return found


def build_engine(onnx_path: str | os.PathLike, settings: BuildSettings, engine_path: str | os.PathLike) -> dict:
    """Build a TensorRT engine from an ONNX file as planned; returns build info."""
    ok, reason = availability(settings.target.name)
    if not ok:
        raise MissingDependency(reason)
    trt = _import_trt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file not found: {onnx_path}")
    plan = plan_build(settings, engine_path)

    log_lines: list[str] = []
    logger = _capturing_logger(trt, log_lines)
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external weights
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    applied = apply_plan(trt, builder, config, network, plan)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        tail = " | ".join(log_lines[-5:])
        raise P2DError(f"TensorRT returned no engine for {onnx_path.name}: {tail}")
    size = _atomic_write(engine_path, serialized)
    if plan["timing_cache"]:
        _atomic_write(Path(plan["timing_cache"]), config.get_timing_cache().serialize())

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(bytes(memoryview(serialized)))
    layers = engine_layer_info(engine, trt)
    return {
        "engine": str(engine_path),
        "bytes": size,
        "build_seconds": round(seconds, 2),
        "tensorrt_version": trt.__version__,
        "device": _probe_gpu()[0],
        "plan": plan,
        "timing_cache": {"path": plan["timing_cache"], "reused": applied["timing_cache_reused"]},
        "sparsity_log": parse_sparsity_log(log_lines),
        "sparse_layers": sparse_layers(layers),
        "num_layers": len(layers),
    }


# ---------------------------------------------------------------- inspection


def engine_layer_info(engine, trt=None) -> list[dict]:
    """Per-layer records from the EngineInspector (JSON); names only unless built DETAILED."""
    trt = trt or _import_trt()
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return parse_layer_info(text)


def parse_layer_info(text: str) -> list[dict]:
    """The inspector's JSON ({"Layers": [...], "Bindings": [...]}) as a list of layer dicts."""
    layers = json.loads(text).get("Layers", [])
    return [layer if isinstance(layer, dict) else {"Name": layer} for layer in layers]


def sparse_layers(layer_info: list[dict]) -> list[str]:
    """Layers that run with 2:4 sparse kernels: the chosen tactic's name says "sparse".

    With detailed profiling, TensorRT names each layer's tactic (e.g. an
    sm80_xmma_..._sparse_... kernel); "HasSparseWeights" is only consulted when a layer
    reports no tactic name.
    """
    names = []
    for layer in layer_info:
        tactic = str(layer.get("TacticName", ""))
        if "sparse" in tactic.lower() or (not tactic and int(layer.get("HasSparseWeights", 0) or 0)):
            names.append(layer.get("Name", "?"))
    return names


# ---------------------------------------------------------------- timing


def _torch_dtype(trt, trt_dtype):
    import torch

    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
        "INT8": torch.int8, "UINT8": torch.uint8, "INT32": torch.int32,
        "INT64": torch.int64, "BOOL": torch.bool,
    }
    for name, dtype in table.items():
        if getattr(trt.DataType, name, None) == trt_dtype:
            return dtype
    raise UserError(f"engine tensor dtype {trt_dtype} has no torch equivalent here")


class TrtRunner:
    """Runs a serialized engine on torch CUDA buffers and times it with CUDA events."""

    def __init__(self, engine_path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None):
        ok, reason = availability("trt")
        if not ok:
            raise MissingDependency(reason)
        import torch

        trt = self.trt = _import_trt()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {engine_path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.inputs, self.outputs = {}, {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                continue
            shape = tuple((input_shapes or {}).get(name) or self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # dynamic: use the profile's opt shape
                shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[1])
            self.context.set_input_shape(name, shape)
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            self.inputs[name] = torch.zeros(shape, dtype=dtype, device="cuda")
        for name in names:
            if name in self.inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            self.outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, tensor in {**self.inputs, **self.outputs}.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.graph = None
        self.used_cuda_graph = False

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise P2DError("TensorRT execute_async_v3 failed")

    def run(self, feed: dict | None = None) -> dict:
        """Copy `feed` (name -> tensor) into the input buffers, run once, return the outputs."""
        import torch

        with torch.cuda.stream(self.stream):
            for name, value in (feed or {}).items():
                self.inputs[name].copy_(torch.as_tensor(value), non_blocking=True)
            self._enqueue()
        self.stream.synchronize()
        return {name: t.clone() for name, t in self.outputs.items()}

    def capture_graph(self) -> bool:
        """Capture one enqueue into a CUDA graph; False (plain enqueue kept) where TensorRT can't."""
        import torch

        self._enqueue()  # TensorRT docs: enqueue once before capture to flush deferred work
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._enqueue()
        except (RuntimeError, P2DError):  # e.g. loops/conditionals, or enqueue needs a realloc
            self.graph = None
            return False
        self.graph = graph
        return True

    def benchmark(self, warmup: int = 20, iters: int = 100, cuda_graph: bool = True) -> list[float]:
        """Latency samples in ms, one CUDA-event pair per iteration, after `warmup` runs."""
        import torch

        used_graph = self.capture_graph() if cuda_graph else False
        launch = self.graph.replay if used_graph else self._enqueue
        with torch.cuda.stream(self.stream):
            for _ in range(warmup):
                launch()
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
            for start, end in events:
                start.record(self.stream)
                launch()
                end.record(self.stream)
        self.stream.synchronize()
        self.used_cuda_graph = used_graph
        return [start.elapsed_time(end) for start, end in events]


def describe(info: dict[str, Any]) -> str:
    """One line summarising a build_engine() result."""
    return (
        f"{info['plan']['target']}: {info['bytes'] / 1e6:.1f} MB engine in {info['build_seconds']} s, "
        f"{len(info['sparse_layers'])}/{info['num_layers']} layers on sparse kernels"
    )
