"""Deployment targets: what each one builds and benchmarks, and whether it can run here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # module under prune2deploy.backends
    description: str
    round_to: int  # default channel alignment
    sparse_round_to: int  # alignment when a 2:4 pass follows (sparse kernels want K % 16 == 0)
    availability: Callable[[], tuple[bool, str]]


def _ort_available() -> tuple[bool, str]:
    try:
        import onnxruntime

        return True, f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider"
    except ImportError as exc:
        return False, f"onnxruntime does not import: {exc}"


def _trt_available(name: str) -> Callable[[], tuple[bool, str]]:
    def check():
        from prune2deploy.backends import tensorrt

        return tensorrt.availability(name)
    return check


def _torch_cuda_available() -> tuple[bool, str]:
    from prune2deploy.backends import torch_cuda

    return torch_cuda.availability()


TARGETS: dict[str, Target] = {
    "ort-cpu": Target("ort-cpu", "ort", "ONNX Runtime on this CPU (default)", 8, 16, _ort_available),
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
