"""OpenVINO runner (target ov-cpu): one compiled model per file, with the properties that decide its speed
(threads, performance hint, inference precision) set explicitly and recorded."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from prune2deploy.backends.ort_cpu.runner import default_threads

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": None}  # int8: the IR's own Q/DQ; the rest stays f32


def cpu_precisions() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin runs natively here (OPTIMIZATION_CAPABILITIES), in p2d's names."""
    import openvino as ov

    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return tuple(p for p, cap in (("fp32", "FP32"), ("bf16", "BF16"), ("fp16", "FP16"), ("int8", "INT8"))
                 if cap in caps)


def properties(threads: int | None, precision: str) -> dict:
    """Compile properties: latency hint, a fixed thread count, and the inference precision of `precision`
    (for int8, f32 for the layers NNCF left in float; OpenVINO would otherwise pick bf16 on its own)."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or default_threads(),
            "INFERENCE_PRECISION_HINT": HINTS[precision] or "f32"}


class OvRunner:
    """Reads an IR (.xml) or ONNX file, compiles it on the CPU with `properties`, runs it."""

    def __init__(self, path: Path, threads: int | None = None, precision: str = "fp32"):
        import openvino as ov

        core = ov.Core()
        self.properties = properties(threads, precision)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", self.properties)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.threads = self.properties["INFERENCE_NUM_THREADS"]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer({k: v for k, v in feed.items() if k in self.input_names})
        return [np.array(result[out]) for out in self.compiled.outputs]

    def timed_call(self, feed: dict[str, np.ndarray]):
        """A zero-argument callable for the timing loop (inputs bound once, no output copies)."""
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items() if k in self.input_names}
        infer = self.request.infer
        return lambda: infer(feed)
