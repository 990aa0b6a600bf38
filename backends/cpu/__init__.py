"""Target cpu (the default): the fastest CPU runtime for this model on this machine. The dense model is timed on
every installed CPU runtime (ort-cpu, ov-cpu) at its own precision, interleaved, and the compile deploys on the
fastest; leaving ONNX Runtime takes a clear margin, so close calls stay where they were. `driver` chooses, then
hands every stage to the chosen runtime's driver."""
from __future__ import annotations

from prune2deploy.backends.ort_cpu import cpu_channel_block
from prune2deploy.backends.target import Target


def _available() -> tuple[bool, str]:
    from prune2deploy.backends.cpu.driver import runtimes

    found = runtimes()
    if not found:
        return False, "neither onnxruntime nor openvino imports"
    return True, "chooses the fastest of " + ", ".join(f"{name} ({why})" for name, (_, why) in found.items())


def _driver():
    from prune2deploy.backends.cpu.driver import CpuDriver

    return CpuDriver()


TARGETS = [Target("cpu", "the fastest CPU runtime for this model, measured: ort-cpu or ov-cpu (default)",
                  cpu_channel_block(), 16, _available, _driver)]
