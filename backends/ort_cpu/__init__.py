"""Target ort-cpu: ONNX Runtime on this CPU. `runner` runs and times ONNX files, `driver` is the pipeline's side."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.backends.target import Target


CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def cpu_channel_block(cpuinfo: str | None = None) -> int:
    """ort-cpu's channel alignment on this CPU: 16 with AVX-512F, else 8.

    onnxruntime's blocked (NCHWc) convolutions work in blocks of 16 channels with AVX-512 and 8 with AVX2. On an
    AVX-512 CPU a width that is a multiple of 8 but not of 16 never ran faster than the multiple of 16 above it,
    and up to 1.16x slower (benchmarks/results/round_to_cliffs.md)."""
    flags = cpu_flags(cpuinfo)
    return 16 if flags and "avx512f" in flags else 8  # not Linux: the AVX2-safe alignment


def _available() -> tuple[bool, str]:
    try:
        import onnxruntime

        return True, f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider"
    except ImportError as exc:
        return False, f"onnxruntime does not import: {exc}"


def _driver():
    from prune2deploy.backends.ort_cpu.driver import OrtCpuDriver

    return OrtCpuDriver()


TARGETS = [Target("ort-cpu", "ONNX Runtime on this CPU (FP32; INT8 through onnxruntime.quantization)", cpu_channel_block(), 16, _available, _driver)]
