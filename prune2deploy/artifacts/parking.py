"""While only ONNX files run (verification, benchmark), the torch models' tensors wait on disk, not in memory.

A compile holds the dense model and the pruned one, and to verify and benchmark them an onnxruntime session
for each: together 4.7x the FP32 weights at peak for BERT-base. Once their reference outputs are computed,
the torch models are not run again until the compile returns them. Parking writes every CPU parameter and
buffer to one file in the work area and empties them in place; each tensor object keeps its identity, so
tied weights, optimizers and hooks that hold them see the same values again when the context exits (also
after an error). If the file cannot be written (a full disk), nothing is parked and the compile goes on.

A caller that wants neither model back (the CLI on its last target) gets `keep=False`: the tensors are emptied
without being written, since writing gigabytes only to read them back costs disk time that grows faster than
the model once the kernel's dirty-page limit is crossed.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.runtime.peak_memory import return_freed_memory

PARK_FILE = ".parked-tensors.pt"


class TensorParking:
    """`park(*models)` moves the models' tensors to `path`; `restore()` brings them back and removes it.
    With `keep=False`, `park` frees them instead and nothing comes back."""

    def __init__(self, path: Path, keep: bool = True):
        self.path = Path(path)
        self.keep = keep
        self.tensors: list[torch.Tensor] = []
        self.released = False
        self.failed: str | None = None

    def park(self, *models: nn.Module | None) -> None:
        if self.tensors:
            raise RuntimeError("tensors are already parked; restore them first")
        tensors = _parkable_tensors(models)
        if not tensors:
            return
        if self.keep:
            try:
                torch.save([t.data for t in tensors], self.path)
            except (OSError, RuntimeError) as exc:  # a full disk: keep everything in memory
                self.path.unlink(missing_ok=True)
                self.failed = f"could not park the torch models on disk ({exc}); they stayed in memory"
                return
        for t in tensors:
            t.data = torch.empty(0, dtype=t.dtype)
        self.tensors, self.released = (tensors, False) if self.keep else ([], True)
        return_freed_memory()

    def restore(self) -> None:
        if not self.tensors:
            return
        values = torch.load(self.path, weights_only=True)
        for t, value in zip(self.tensors, values):
            t.data = value
        self.tensors = []
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def parking(path: Path, keep: bool = True):
    """A TensorParking whose kept tensors are back in place when the block exits, however it exits."""
    spot = TensorParking(path, keep)
    try:
        yield spot
    finally:
        spot.restore()


def _parkable_tensors(models) -> list[torch.Tensor]:
    """Each model's dense CPU parameters and buffers, each tensor once (tied weights, shared modules)."""
    seen, tensors = set(), []
    for model in models:
        if model is None:
            continue
        for t in itertools.chain(model.parameters(), model.buffers()):
            if id(t) in seen or type(t) not in (torch.Tensor, nn.Parameter) or t.device.type != "cpu" \
                    or t.layout != torch.strided or t.is_quantized or t.numel() == 0:
                continue
            seen.add(id(t))
            tensors.append(t)
    return tensors
