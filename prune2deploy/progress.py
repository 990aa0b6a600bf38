"""Stage progress on stderr: shown on a terminal, silent when piped or under CI."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = self.stream.isatty() and not os.environ.get("CI")
        self.enabled = enabled
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, label: str):
        """Time a stage (always recorded) and show it (when enabled)."""
        if self.enabled:
            self.stream.write(f"  {label} ...")
            self.stream.flush()
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.enabled:
                self.stream.write(" failed\n")
            raise
        finally:
            self.times[name] = round(time.perf_counter() - start, 3)
        if self.enabled:
            self.stream.write(f" {self.times[name]:.1f}s\n")

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r  {text}")
            self.stream.flush()

    def warn(self, text: str) -> None:
        """Warnings are shown even when progress is not."""
        self.stream.write(f"warning: {text}\n")
