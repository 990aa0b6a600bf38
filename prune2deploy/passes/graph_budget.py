"""A bounded probe of what torch-pruning's dependency graph costs: seconds and memory above the start.

torch-pruning builds the graph and walks every group in pure Python; on window-reshaping models
(Swin, MaxViT) that walk grows without bound. `GraphBudget` interrupts the main thread once the work
inside it runs past its time or memory allowance and turns that into `GraphTooCostly`, so the caller
can fall back (block-local pruning) within seconds instead of minutes at the machine's memory ceiling.
`release_trace` frees what a built graph holds on to once its groups are pruned.
"""
from __future__ import annotations

import _thread
import signal
import threading
import time

from prune2deploy.runtime.watchdog import rss_bytes, take_sigint

DEFAULT_SECONDS = 30.0
DEFAULT_GB = 4.0
POLL_S = 0.1
REPEAT_S = 0.5


class GraphTooCostly(Exception):
    """The dependency graph ran past its budget; `str()` says which budget."""


class GraphBudget:
    """`with GraphBudget(seconds, gb, what):` raises GraphTooCostly when the body exceeds either budget."""

    def __init__(self, seconds: float = DEFAULT_SECONDS, gb: float = DEFAULT_GB, what: str = "dependency graph"):
        self.seconds, self.gb, self.what = seconds, gb, what
        self.tripped: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._sent = False

    def __enter__(self):
        self._start_rss, self._start = rss_bytes(), time.monotonic()
        self.peak_gb = 0.0
        self._interruptible, self._old_sigint = take_sigint()
        self._thread = threading.Thread(target=self._watch, name="p2d-graph-budget", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            grown = (rss_bytes() - self._start_rss) / 1024**3
            self.peak_gb = max(self.peak_gb, grown)
            elapsed = time.monotonic() - self._start
            reason = (f"{self.what} took over {self.seconds:g} s" if elapsed > self.seconds else
                      f"{self.what} grew memory by over {self.gb:g} GB" if grown > self.gb else None)
            if reason:
                self.tripped = self.tripped or reason
                # again every REPEAT_S: torch-pruning's tracing has a bare `except:` that swallows one
                with self._lock:
                    if not self._done.is_set() and self._interruptible:
                        self._sent = True
                        _thread.interrupt_main()
                if self._done.wait(REPEAT_S):
                    return

    def __exit__(self, exc_type, exc, tb):
        while True:  # an interrupt sent just before this must not escape from here
            try:
                with self._lock:
                    self._done.set()
                self._thread.join()
                if self._sent:
                    time.sleep(0.05)  # take a last pending interrupt here, not in the caller
                break
            except KeyboardInterrupt:
                continue
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)
        self.elapsed_s = time.monotonic() - self._start
        if self.tripped and (exc_type is None or issubclass(exc_type, KeyboardInterrupt)):
            raise GraphTooCostly(self.tripped) from None
        return False


def release_trace(graph) -> None:
    """Let go of the autograd graph torch-pruning's trace keeps: every node holds its output's grad_fn, and
    with it each activation saved for backward (~0.3 GB on ViT-L/16). The dependency graph's nodes reference
    each other, so without this that memory waits for the garbage collector. Call it once the graph's groups
    are pruned; the graph cannot find groups after."""
    for node in graph.module2node.values():
        node.grad_fn = None
        op = node.module
        if type(op).__module__ == "torch_pruning.ops":  # torch-pruning's stand-ins for functional ops
            for attr in ("grad_fn", "_grad_fn"):
                if hasattr(op, attr):
                    setattr(op, attr, None)
