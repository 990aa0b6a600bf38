"""A bounded probe of what torch-pruning's dependency graph costs: seconds and memory above the start.

torch-pruning builds the graph and walks every group in pure Python; on window-reshaping models
(Swin, MaxViT) that walk grows without bound. `GraphBudget` interrupts the main thread once the work
inside it runs past its time or memory allowance and turns that into `GraphTooCostly`, so the caller
can fall back (block-local pruning) within seconds instead of minutes at the machine's memory ceiling.
"""
from __future__ import annotations

import _thread
import signal
import threading
import time

from ..watchdog import rss_bytes, take_sigint

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

