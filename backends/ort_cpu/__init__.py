"""Target ort-cpu: ONNX Runtime on this CPU. `runner` runs and times ONNX files, `driver` is the pipeline's side."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.backends.target import Target


def cpu_channel_block(cpuinfo: str = "/proc/cpuinfo") -> int:
    """ort-cpu's channel alignment on this CPU: 16 with AVX-512F, else 8.

    onnxruntime's blocked (NCHWc) convolutions work in blocks of 16 channels with AVX-512 and 8 with AVX2. On an
    AVX-512 CPU a width that is a multiple of 8 but not of 16 never ran faster than the multiple of 16 above it,
    and up to 1.16x slower (benchmarks/results/round_to_cliffs.md)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path(cpuinfo).read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:  # not Linux: keep the AVX2-safe alignment
        return 8
    return 16 if "avx512f" in flags else 8


def _available() -> tuple[bool, str]:
    try:
        import onnxruntime

        return True, f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider"
    except ImportError as exc:
        return False, f"onnxruntime does not import: {exc}"


def _driver():
    from prune2deploy.backends.ort_cpu.driver import OrtCpuDriver

    return OrtCpuDriver()


TARGETS = [Target("ort-cpu", "ONNX Runtime on this CPU (default)", cpu_channel_block(), 16, _available, _driver)]
