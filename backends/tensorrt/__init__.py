"""Targets trt-ampere, trt-hopper, trt: TensorRT engines built from the FP16 ONNX. `engine` wraps the TensorRT API,
`fp16` converts the verified ONNX, `driver` is the pipeline's side (and `p2d build` finishes a prepared compile)."""
from __future__ import annotations

from typing import Callable

from prune2deploy.backends.target import Target


def _available(name: str) -> Callable[[], tuple[bool, str]]:
    def check():
        from prune2deploy.backends.tensorrt import engine

        return engine.availability(name)
    return check


def _driver(name: str) -> Callable[[], object]:
    def make():
        from prune2deploy.backends.tensorrt.driver import TensorRtDriver

        return TensorRtDriver(name)
    return make


def _row(name: str, description: str) -> Target:
    return Target(name, description, 8, 16, _available(name), _driver(name))


TARGETS = [
    _row("trt-ampere", "TensorRT engine for every Ampere-or-later GPU (hardware compatibility AMPERE_PLUS)"),
    _row("trt-hopper", "TensorRT engine for compute capability 9.x (H100/H200)"),
    _row("trt", "TensorRT engine for the GPU present"),
]
