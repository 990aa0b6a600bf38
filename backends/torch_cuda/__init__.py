"""Target torch-cuda: torch.compile on a CUDA GPU, 2:4 Linear weights as semi-structured sparse tensors.
`runner` compiles and times, `semi_structured` lays out 2:4 weights, `driver` is the pipeline's side."""
from __future__ import annotations

from prune2deploy.backends.target import Target


def _available() -> tuple[bool, str]:
    from prune2deploy.backends.torch_cuda import runner

    return runner.availability()


def _driver():
    from prune2deploy.backends.torch_cuda.driver import TorchCudaDriver

    return TorchCudaDriver()


TARGETS = [Target("torch-cuda", "torch.compile on a CUDA GPU, fp16, 2:4 Linear weights as semi-structured sparse "
                  "tensors", 8, 16, _available, _driver)]
