"""Bounded work: a per-stage time limit and a memory ceiling, enforced from a watcher thread.

When a stage overruns, the watcher interrupts the main thread (KeyboardInterrupt at the next Python
bytecode), which Progress turns into a one-line UserError naming the stage. Code stuck in C for longer
than GRACE_S after that is ended with os._exit, so a runaway stage never takes the machine down.
"""
from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

DEFAULT_STAGE_TIMEOUT_S = 1800.0
DEFAULT_MEMORY_FRACTION = 0.85
GRACE_S = 20.0
POLL_S = 0.2

HINTS = {
    "prune_channels": "torch-pruning's dependency graph can grow without bound on some architectures; "
                      "lower --graph-budget-s so p2d prunes block by block sooner, --ignore the blocks it "
                      "stalls on, or lower --iterative-steps",
    "load": "check the model file and inputs",
}


@dataclass(frozen=True)
class Limits:
    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S
    max_memory_bytes: int | None = None

    @classmethod
    def from_args(cls, stage_timeout_s: float | None, max_memory_gb: float | None) -> "Limits":
        total = _total_memory()
        memory = int(max_memory_gb * 1024**3) if max_memory_gb else (
            int(total * DEFAULT_MEMORY_FRACTION) if total else None)
        return cls(stage_timeout_s or DEFAULT_STAGE_TIMEOUT_S, memory)


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def take_sigint() -> tuple[bool, object]:
    """Make an interrupt from a watcher thread reach the main thread as KeyboardInterrupt.

    A process started in the background (`p2d ... &`, some CI runners) can inherit SIGINT ignored, and a
    library may install its own handler; then `_thread.interrupt_main` does nothing. Returns (can interrupt,
    the handler to put back or None). Off the main thread nothing can be interrupted: (False, None).
    """
    if threading.current_thread() is not threading.main_thread():
        return False, None
    current = signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler:
        return True, None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True, current


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class StageWatch:
    """Watches one stage; `tripped` holds the reason once a limit was hit."""

    def __init__(self, stage: str, limits: Limits):
        self.stage, self.limits = stage, limits
        self.tripped: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"p2d-watch-{stage}", daemon=True)

    def __enter__(self):
        self._interruptible, self._old_sigint = take_sigint()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)
        return False

    def _watch(self) -> None:
        start = time.monotonic()
        while not self._done.wait(POLL_S):
            elapsed = time.monotonic() - start
            if elapsed > self.limits.stage_timeout_s:
                self._trip(f"stage {self.stage} took longer than {self.limits.stage_timeout_s:g} s "
                           f"(--stage-timeout)")
                return
            rss = rss_bytes()
            if self.limits.max_memory_bytes and rss > self.limits.max_memory_bytes:
                self._trip(f"stage {self.stage} used {rss / 1024**3:.1f} GB, over the "
                           f"{self.limits.max_memory_bytes / 1024**3:.1f} GB limit (--max-memory-gb)")
                return

    def _trip(self, reason: str) -> None:
        self.tripped = reason
        if self._interruptible:
            _thread.interrupt_main()
        if self._done.wait(GRACE_S):
            return
        sys.stderr.write(f"error: {reason}; the stage did not stop, exiting (hint: {hint_for(self.stage)})\n")
        sys.stderr.flush()
        os._exit(2)


def hint_for(stage: str) -> str:
    return HINTS.get(stage, "raise the limit if the model is simply large, or ignore layers to shrink the work")
