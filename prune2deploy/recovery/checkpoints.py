"""Per-epoch recovery checkpoints in the work area, and `--resume` after a kill -9.

A checkpoint holds plain tensors and numbers only (loaded with weights_only=True): the pruned network's
structure (every parameter's shape and the modules' numeric attributes: widths, head counts) and its weights,
the optimiser, schedule and RNG states, and the curve so far. Resuming rebuilds the pruned structure on a copy
of the dense model, so nothing in the file is ever executed.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.artifacts.outdir import write_atomic

_SIMPLE = (int, float, bool, str)
FILE = "recovery.pt"


def _simple(value) -> bool:
    if isinstance(value, _SIMPLE) or value is None:
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value)


def structure(model: nn.Module) -> dict:
    """Shapes of every parameter and buffer, and the numeric attributes of every module (widths, heads)."""
    shapes = {n: list(t.shape) for n, t in model.state_dict().items()}
    attrs = {name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(m).items()
                    if _simple(v) and k != "training"}
             for name, m in model.named_modules()}
    return {"shapes": shapes, "attrs": attrs}


def rebuild(model: nn.Module, saved: dict) -> nn.Module:
    """Give `model` (a copy of the dense model, or a pruned one) the saved structure, in place."""
    modules = dict(model.named_modules())
    for full, shape in saved["shapes"].items():
        owner, _, leaf = full.rpartition(".")
        m = modules.get(owner)
        if m is None:
            continue
        if leaf in m._parameters and m._parameters[leaf] is not None:
            old = m._parameters[leaf]
            if list(old.shape) != shape:
                m._parameters[leaf] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
        elif leaf in m._buffers and m._buffers[leaf] is not None and list(m._buffers[leaf].shape) != shape:
            m._buffers[leaf] = m._buffers[leaf].new_empty(shape)
    for name, values in saved["attrs"].items():
        m = modules.get(name)
        for k, v in (values.items() if m is not None else ()):
            current = getattr(m, k, None)
            setattr(m, k, tuple(v) if isinstance(current, tuple) and isinstance(v, list) else v)
    return model


RESUME_ROOT = "p2d-resume"  # in the temp directory: one folder per compile key


class Checkpoints:
    """One compile's recovery checkpoint: DIR/recovery.pt, written atomically by rank 0 only."""

    def __init__(self, directory: Path, resume: bool = False):
        self.directory, self.resume = Path(directory), resume

    @classmethod
    def for_compile(cls, key: str, resume: bool) -> "Checkpoints":
        """The work area of a compile: a temp directory named by the compile's identity (model, data, options,
        output directory), so `--resume` finds exactly the run it continues."""
        return cls(Path(tempfile.gettempdir()) / RESUME_ROOT / key, resume)

    @property
    def path(self) -> Path:
        return self.directory / FILE

    def load(self) -> dict | None:
        if not self.resume or not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: start over rather than fail
            return None

    def save(self, state: dict) -> None:
        from prune2deploy.runtime import distributed

        if not distributed.is_main():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.path, buffer.getvalue())

    def clear(self) -> None:
        from prune2deploy.runtime import distributed

        if not distributed.is_main():
            return
        self.path.unlink(missing_ok=True)  # only the file p2d wrote; its own folders go once empty
        if self.directory.parent.name != RESUME_ROOT:
            return
        for folder in (self.directory, self.directory.parent):
            try:
                folder.rmdir()
            except OSError:
                break


def compile_key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24] + f"-{os.getuid()}"
