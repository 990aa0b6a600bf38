"""Where a compile's recovery checkpoint lives: a work area in the temp directory named by the compile's
identity, written atomically by rank 0 only, removed once the compile is published. What a checkpoint holds
(plain tensors and numbers; the pruned structure) is recovery's business (recovery/checkpoints.py)."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

from prune2deploy.artifacts.outdir import write_atomic


FILE = "recovery.pt"


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
