"""What every stage of a compile shares: the example inputs and the resolved options."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class ExampleInputs:
    """Positional and keyword inputs for one forward call, plus the names ONNX gives them."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        if self.kwargs:
            return list(self.kwargs)
        return ["input" if len(self.args) == 1 else f"input_{i}" for i in range(len(self.args))]

    def tensors(self) -> list[torch.Tensor]:
        return list(self.kwargs.values()) if self.kwargs else list(self.args)

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def as_feed(self) -> dict:
        """The same inputs as an onnxruntime feed (name -> numpy array)."""
        return {n: t.detach().cpu().numpy() for n, t in zip(self.names, self.tensors())}

    def like(self, tensors: list[torch.Tensor]) -> "ExampleInputs":
        """New inputs with the same structure and names, other values."""
        if self.kwargs:
            return ExampleInputs((), dict(zip(self.kwargs, tensors)))
        return ExampleInputs(tuple(tensors), {})


@dataclass
class CompileContext:
    """Shared state of one compile. Passes read options from here and never touch the CLI."""

    example_inputs: ExampleInputs
    options: Any = None  # prune2deploy.config.options.CompileOptions
    calib_batches: list = field(default_factory=list)  # [(ExampleInputs, labels or None)]
    records: dict = field(default_factory=dict)  # pass name -> record
