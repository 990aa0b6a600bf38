"""Stage progress on stderr (shown on a terminal, silent when piped or under CI), stage timing, and
the per-stage limits of watchdog.py."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from prune2deploy.errors import user_error
from prune2deploy.runtime.peak_memory import PeakTracker
from prune2deploy.runtime.watchdog import Limits, StageWatch, hint_for


class Progress:
    def __init__(self, enabled: bool | None = None, stream=None, limits: Limits | None = None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = self.stream.isatty() and not os.environ.get("CI")
        self.enabled = enabled
        self.limits = limits
        self.times: dict[str, float] = {}
        self.cpu_times: dict[str, float] = {}  # CPU seconds of the whole process (all threads) per stage
        self.memory = PeakTracker()

    def fresh(self) -> "Progress":
        """Same display and limits, empty timings (one per compile)."""
        p = Progress(self.enabled, self.stream, self.limits)
        p.times = {k: v for k, v in self.times.items() if k == "load"}
        p.memory.peaks_mb = {k: v for k, v in self.memory.peaks_mb.items() if k == "load"}
        p.cpu_times = {k: v for k, v in self.cpu_times.items() if k == "load"}
        return p

    @property
    def peaks_mb(self) -> dict[str, float | None]:
        """Peak resident memory of each stage in MB (None where the OS cannot say)."""
        return self.memory.peaks_mb

    @contextmanager
    def stage(self, name: str, label: str):
        """Time a stage (always recorded), show it (when enabled), and enforce the limits (when set)."""
        if self.enabled:
            self.stream.write(f"  {label} ...")
            self.stream.flush()
        start, cpu_start = time.perf_counter(), time.process_time()
        self.memory.enter(name)
        watch = StageWatch(name, self.limits) if self.limits else None
        try:
            if watch:
                with watch:
                    yield
            else:
                yield
        except KeyboardInterrupt:
            if self.enabled:
                self.stream.write(" stopped\n")
            if watch and watch.tripped:
                raise user_error(watch.tripped, hint_for(name)) from None
            raise
        except BaseException:
            if self.enabled:
                self.stream.write(" failed\n")
            raise
        finally:
            self.times[name] = round(time.perf_counter() - start, 3)
            self.cpu_times[name] = round(time.process_time() - cpu_start, 3)
            self.memory.leave(name)
        if self.enabled:
            self.stream.write(f" {self.times[name]:.1f}s\n")

    def say(self, text: str) -> None:
        """A line of its own between stages (candidate k of n, ...), shown only when progress is."""
        if self.enabled:
            self.stream.write(f"  {text}\n")
            self.stream.flush()

    def warn(self, text: str) -> None:
        """Warnings are shown even when progress is not."""
        self.stream.write(f"warning: {text}\n")
