"""Peak resident memory per stage (Linux): the kernel's own high-water mark, reset at each stage start.

Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS; reading VmHWM at the stage end gives
the stage's true peak (no sampling gaps). Stages may nest: before a reset, the high-water mark so far is
credited to every open stage, so an outer stage's peak is still the maximum over its whole duration.
A reset also lowers getrusage's ru_maxrss: the whole process's peak is `process_peak_mb()`.
Child processes (none of p2d's stages start any today): when the largest waited-for child's peak
(RUSAGE_CHILDREN) grew during a stage, it is added to the stage's peak, an upper bound. Where /proc is missing, peaks are None and nothing is reset.
"""
from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def high_water_mark_bytes() -> int | None:
    """VmHWM: this process's peak RSS since start or the last reset."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_record_bytes = 0  # the process's peak before the last reset (a reset also lowers getrusage's ru_maxrss)


def process_peak_mb() -> float:
    """Peak RSS of the whole process so far in MB, across the per-stage resets."""
    now = max(high_water_mark_bytes() or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return round(max(_record_bytes, now) / 1024**2, 1)


def return_freed_memory() -> None:
    """Collect garbage and hand glibc's freed heap back to the OS (glibc keeps it otherwise, and the next
    stage would count it against --max-memory-gb and its own peak: Swin-V2-T went over 3 GB that way)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_high_water_mark() -> bool:
    global _record_bytes
    _record_bytes = max(_record_bytes, high_water_mark_bytes() or 0)
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _children_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class PeakTracker:
    """Per-stage peak RSS in MB (`peaks_mb`); `enter`/`leave` bracket a stage, nested or not."""

    def __init__(self):
        self.peaks_mb: dict[str, float | None] = {}
        self._open: list[list] = []  # [name, peak bytes so far, children peak at start]
        self.supported = high_water_mark_bytes() is not None and _CLEAR_REFS.exists()

    def _credit_open_stages(self) -> None:
        hwm = high_water_mark_bytes() or 0
        for entry in self._open:
            entry[1] = max(entry[1], hwm)

    def enter(self, name: str) -> None:
        if not self.supported:
            return
        self._credit_open_stages()
        return_freed_memory()  # what earlier stages freed is not this stage's
        self.supported = _reset_high_water_mark()
        self._open.append([name, high_water_mark_bytes() or 0, _children_peak_bytes()])

    def leave(self, name: str) -> None:
        if not self.supported or not self._open:
            self.peaks_mb[name] = None
            return
        self._credit_open_stages()
        stage, peak, children_before = self._open.pop()
        children_now = _children_peak_bytes()
        if children_now > children_before:  # a child (or its descendants) set a new record during the stage
            peak += children_now
        self.peaks_mb[stage] = round(peak / 1024**2, 1)
