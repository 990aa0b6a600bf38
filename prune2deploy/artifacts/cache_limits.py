"""A bounded compile cache: least-recently-used entries are evicted whole, and `p2d cache info|clear`.

Only p2d's own entries count and are ever deleted: a `<32 hex key>/` directory (not a link) whose
ENTRY_MARKER names that key, and its own temporary directories of processes that are gone.
An entry's last use is its ENTRY_MARKER's mtime (touched on every hit).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prune2deploy.errors import user_error
from prune2deploy.artifacts.ownership import WRITTEN_BY

DEFAULT_MAX_GB = 10.0
ENTRY_MARKER = ".p2d-cache-entry"  # {"written_by": "prune2deploy", "key": KEY}; never restored
_KEY = re.compile(r"[0-9a-f]{32}")
_TMP = re.compile(r"\.([0-9a-f]{32})\.tmp-[A-Za-z0-9_]+-(\d+)")


@dataclass
class Entry:
    path: Path
    bytes: int
    last_used: float


def _marker_key(directory: Path) -> str | None:
    marker = directory / ENTRY_MARKER
    try:
        if directory.is_symlink() or marker.is_symlink():
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data.get("key") if isinstance(data, dict) and data.get("written_by") == WRITTEN_BY else None


def _size(directory: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def entries(cache_dir: Path) -> tuple[list[Entry], int]:
    """p2d's entries, least recently used first, and how many other things the directory holds."""
    found, others = [], 0
    try:
        children = list(Path(cache_dir).iterdir())
    except OSError:
        return [], 0
    for child in children:
        if _KEY.fullmatch(child.name) and _marker_key(child) == child.name:
            try:
                found.append(Entry(child, _size(child), (child / ENTRY_MARKER).stat().st_mtime))
            except OSError:  # evicted by another compile meanwhile
                pass
        elif not _TMP.fullmatch(child.name):
            others += 1
    return sorted(found, key=lambda e: e.last_used), others


def touch(entry: Path) -> None:
    """Record a use of the entry (its marker's mtime), for least-recently-used eviction."""
    try:
        os.utime(entry / ENTRY_MARKER)
    except OSError:
        pass


def _remove(entry: Path) -> None:
    """Move the entry out of the way in one step (a lookup never sees half of it), then delete it."""
    if _marker_key(entry) != entry.name:
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", suffix=f"-{os.getpid()}", dir=entry.parent))
    try:
        os.rename(entry, trash)  # onto the empty directory just made
    except OSError:
        trash.rmdir()
        return
    if (trash / ENTRY_MARKER).exists():
        shutil.rmtree(trash, ignore_errors=True)


def remove_stale_tmp(cache_dir: Path) -> None:
    """Temporary directories of stores that were killed: p2d's name, p2d's marker, a process that is gone."""
    from prune2deploy.artifacts.outdir import _pid_alive

    try:
        children = list(Path(cache_dir).iterdir())
    except OSError:
        return
    for child in children:
        match = _TMP.fullmatch(child.name)
        if match and not _pid_alive(int(match.group(2))) and _marker_key(child) == match.group(1):
            shutil.rmtree(child, ignore_errors=True)


def evict(cache_dir: Path, max_bytes: int, keep: str | None = None) -> list[Entry]:
    """Delete least-recently-used entries until p2d's entries fit in `max_bytes`; never the entry `keep`."""
    remove_stale_tmp(cache_dir)
    found, _ = entries(cache_dir)
    total = sum(e.bytes for e in found)
    evicted = []
    for entry in found:
        if total <= max_bytes:
            break
        if entry.path.name == keep:
            continue
        _remove(entry.path)
        total -= entry.bytes
        evicted.append(entry)
    return evicted


def clear(cache_dir: Path) -> tuple[list[Entry], int]:
    """Delete every p2d entry; returns them and how many other things were left alone."""
    remove_stale_tmp(cache_dir)
    found, others = entries(cache_dir)
    for entry in found:
        _remove(entry.path)
    return found, others


def max_bytes(max_gb: float | None) -> int:
    value = DEFAULT_MAX_GB if max_gb is None else max_gb
    if not isinstance(value, (int, float)) or value <= 0:
        raise user_error(f"cache-max-gb {value} must be > 0", "e.g. --cache-max-gb 10, or --no-cache")
    return int(value * (1 << 30))
