"""Target ov-cpu: OpenVINO on this CPU. `runner` compiles and times models (IR or ONNX) with recorded properties,
`lower` writes the IR at the deployed precision (BF16 through the inference-precision hint, INT8 through NNCF),
`driver` is the pipeline's side."""
from __future__ import annotations

from prune2deploy.backends.ort_cpu import cpu_channel_block
from prune2deploy.backends.target import Target


def _available() -> tuple[bool, str]:
    try:
        import openvino

        return True, f"openvino {openvino.get_version().split('-')[0]}, CPU plugin"
    except ImportError as exc:
        return False, f"openvino does not import: {exc} (pip install openvino)"


def _driver():
    from prune2deploy.backends.ov_cpu.driver import OvCpuDriver

    return OvCpuDriver()


TARGETS = [Target("ov-cpu", "OpenVINO on this CPU (BF16 where the CPU has it, INT8 through NNCF)", cpu_channel_block(),
                  16, _available, _driver)]
