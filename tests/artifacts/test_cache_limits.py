"""Issue 13 (cache bound): LRU eviction of whole p2d entries; `p2d cache info|clear` touch only p2d's entries."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn

import prune2deploy
from helpers import assert_user_error
from prune2deploy.artifacts import cache, cache_limits
from prune2deploy.pipeline import Output

MB = 1 << 20


def _entry(cache_dir, key: str, size: int, last_used: float) -> None:
    """A p2d cache entry as cache.store makes it, `size` bytes, last used at `last_used`."""
    work = cache_dir.parent / f"work-{key[:4]}"
    work.mkdir(parents=True)
    (work / "report.json").write_bytes(b"x" * size)
    cache.store(cache_dir, key, work, ["report.json"], max_bytes=1 << 40)
    os.utime(cache_dir / key / cache.ENTRY_MARKER, (last_used, last_used))


def _users_things(cache_dir) -> dict:
    (cache_dir / "notes.txt").write_text("mine\n")
    fake = cache_dir / ("f" * 32)  # named like an entry, no marker: not p2d's
    fake.mkdir()
    (fake / "report.json").write_bytes(b"y" * 3 * MB)
    wrong = cache_dir / ("e" * 32)  # a marker naming another key: not this entry
    wrong.mkdir()
    (wrong / cache.ENTRY_MARKER).write_text(json.dumps({"written_by": "prune2deploy", "key": "d" * 32}))
    return {p: p.read_bytes() for p in (cache_dir / "notes.txt", fake / "report.json", wrong / cache.ENTRY_MARKER)}


def test_evicts_least_recently_used_p2d_entries_only(tmp_path):
    cache_dir = tmp_path / "cache"
    for i, key in enumerate(("a" * 32, "b" * 32, "c" * 32)):
        _entry(cache_dir, key, MB, last_used=1000.0 + i)
    theirs = _users_things(cache_dir)
    assert cache.lookup(cache_dir, "a" * 32)  # a hit makes "a" the most recently used
    evicted = cache_limits.evict(cache_dir, int(2.5 * MB), keep="b" * 32)
    assert [e.path.name for e in evicted] == ["c" * 32]  # b is oldest now but kept; c next
    assert sorted(p.name for p in cache_dir.iterdir() if len(p.name) == 32) == ["a" * 32, "b" * 32, "e" * 32, "f" * 32]
    assert all(p.read_bytes() == data for p, data in theirs.items())
    found, others = cache_limits.entries(cache_dir)
    assert [e.path.name for e in found] == ["b" * 32, "a" * 32] and others == 3


def test_clear_deletes_only_p2d_entries(p2d_in_process, tmp_path):
    cache_dir = tmp_path / "cache"
    _entry(cache_dir, "a" * 32, MB, last_used=1000.0)
    _entry(cache_dir, "b" * 32, 2 * MB, last_used=1001.0)
    theirs = _users_things(cache_dir)
    info = p2d_in_process("cache", "info", "--cache-dir", "cache", "--json")
    assert info.code == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["entries"] == 2 and data["other_items"] == 3
    assert 3 * MB <= data["bytes"] < 3 * MB + 4096  # the markers are a few bytes each
    cleared = p2d_in_process("cache", "clear", "--cache-dir", "cache")
    assert cleared.code == 0, cleared.stderr
    assert "removed 2 entries" in cleared.stdout and "kept 3 items p2d did not write" in cleared.stdout
    assert sorted(p.name for p in cache_dir.iterdir()) == ["e" * 32, "f" * 32, "notes.txt"]
    assert all(p.read_bytes() == data for p, data in theirs.items())


@pytest.mark.slow
def test_compile_keeps_the_cache_within_its_bound(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 14 * 14, 10)).eval()
    cache_dir = tmp_path / "cache"
    for ratio in (0.5, 0.25):  # two keys; a bound smaller than one entry keeps only the newest
        r = prune2deploy.compile(model, torch.randn(1, 3, 16, 16), out_dir=tmp_path / "out", ratio=ratio,
                                 skip_benchmark=True, output=Output(cache_dir=cache_dir, cache_max_gb=1e-6))
        assert not r.report["cache"]["hit"]
    assert [e.path.name for e in cache_limits.entries(cache_dir)[0]] == [r.report["cache"]["key"]]


def test_bad_cache_bound_is_one_line(p2d):
    r = p2d("compile", "prune2deploy.examples:small_resnet", "--input-shape", "1,3,16,16", "--out", "o",
            "--cache-max-gb", "0")
    assert_user_error(r, "cache-max-gb 0.0 must be > 0")
