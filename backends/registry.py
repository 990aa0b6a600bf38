"""Deployment targets: what each one builds and benchmarks, and whether it can run here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # module under prune2deploy.backends
    description: str
    round_to: int  # default channel alignment
    sparse_round_to: int  # alignment when a 2:4 pass follows (sparse kernels want K % 16 == 0)
    availability: Callable[[], tuple[bool, str]]


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


def _ort_available() -> tuple[bool, str]:
    try:
        import onnxruntime

        return True, f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider"
    except ImportError as exc:
        return False, f"onnxruntime does not import: {exc}"


def _trt_available(name: str) -> Callable[[], tuple[bool, str]]:
    def check():
        from prune2deploy.backends.tensorrt import engine as tensorrt

        return tensorrt.availability(name)
    return check


def _torch_cuda_available() -> tuple[bool, str]:
    from prune2deploy.backends.torch_cuda import runner as torch_cuda

    return torch_cuda.availability()


TARGETS: dict[str, Target] = {
    "ort-cpu": Target("ort-cpu", "ort", "ONNX Runtime on this CPU (default)", cpu_channel_block(), 16,
                      _ort_available),
    "trt-ampere": Target("trt-ampere", "tensorrt", "TensorRT engine for every Ampere-or-later GPU "
                         "(hardware compatibility AMPERE_PLUS)", 8, 16, _trt_available("trt-ampere")),
    "trt-hopper": Target("trt-hopper", "tensorrt", "TensorRT engine for compute capability 9.x (H100/H200)",
                         8, 16, _trt_available("trt-hopper")),
    "trt": Target("trt", "tensorrt", "TensorRT engine for the GPU present", 8, 16, _trt_available("trt")),
    "torch-cuda": Target("torch-cuda", "torch_cuda", "torch.compile on a CUDA GPU, fp16, 2:4 Linear weights "
                         "as semi-structured sparse tensors", 8, 16, _torch_cuda_available),
}


def availability(name: str) -> tuple[bool, str]:
    try:
        return TARGETS[name].availability()
    except Exception as exc:  # an optional backend that fails to import is simply unavailable
        return False, f"backend does not load: {exc}"
