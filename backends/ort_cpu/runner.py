"""ONNX Runtime runner (target ort-cpu): one session per model, full graph optimisations."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OrtRunner:
    """Loads an ONNX file into an InferenceSession on the CPU provider and runs it."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Pool threads spin-wait after Run and steal cores from the next session's Run: with dense and
        # pruned interleaved (as in any multi-model service) that slowed both by up to 1.6x on 2 cores and
        # skewed their ratio. Spinning stays on inside a Run (fast hand-offs), and stops when it returns.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})

    def timed_call(self, feed: dict[str, np.ndarray]):
        """A zero-argument callable for the timing loop (binds inputs once)."""
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items() if k in self.input_names}
        run = self.session.run
        return lambda: run(None, feed)


def device_description() -> str:
    """The CPU model name and the number of cores this process may use."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        name = platform.processor() or name
    return f"{name}, {default_threads()} cores"
