"""Content-addressed compile cache: model + inputs + resolved options + tool versions -> pruned model,
ONNX files, build plans and the verified report, so an unchanged compile only benchmarks again.

An entry is `CACHE_DIR/<32 hex key>/` holding ENTRY_MARKER; p2d writes only entries and their private
temporary directories (`.<key>.tmp-<random>-<pid>`) there and removes nothing else.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from prune2deploy.artifacts import cache_limits
from prune2deploy.artifacts.cache_limits import ENTRY_MARKER
from prune2deploy.artifacts.outdir import write_atomic
from prune2deploy.artifacts.ownership import WRITTEN_BY

# Settings that change only the benchmark, not the artifacts.
BENCH_ONLY = ("threads", "warmup", "min_iters", "bench_seconds", "skip_benchmark",
              "resume",  # resuming a recovery gives the same weights as not being interrupted
              "test_data", "search_minutes")  # measured after the artifacts (a hit measures the test data again)
CACHED = ("report.json", "verification_data.pt")  # besides the model artifacts


def default_dir() -> Path:
    return Path(os.environ.get("P2D_CACHE_DIR") or Path.home() / ".cache" / "prune2deploy")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _source_of(model: torch.nn.Module) -> str:
    """The source of every module class in the model: editing forward() changes the key."""
    texts = []
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        try:
            texts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            texts.append(f"{cls.__module__}.{cls.__qualname__}")
    return "\n".join(texts)


def cache_key(model, inputs, options, data_batches, versions: dict) -> str:
    """`data_batches`: every (inputs, labels) batch the compile reads (calibration, training, validation)."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(_source_of(model).encode())
    for name, value in model.state_dict().items():
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(_tensor_bytes(value))
    for name, t in zip(inputs.names, inputs.tensors()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    for batch, labels in data_batches:
        for t in batch.tensors() + ([labels] if labels is not None else []):
            h.update(_tensor_bytes(t))
    settings = {k: v for k, v in options.resolved().items() if k not in BENCH_ONLY}
    h.update(json.dumps({"options": settings, "versions": versions}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def lookup(cache_dir: Path, key: str) -> Path | None:
    entry = Path(cache_dir) / key
    if not (entry / "report.json").exists():
        return None
    cache_limits.touch(entry)
    return entry


def store(cache_dir: Path, key: str, work: Path, names: list[str], max_bytes: int | None = None) -> None:
    """Copy the named files from `work` into the cache entry, atomically; a cache that fails is skipped.
    Then evict least-recently-used entries beyond `max_bytes` (default: cache_limits.DEFAULT_MAX_GB)."""
    cache_dir = Path(cache_dir)
    if (cache_dir / key).exists():
        return
    tmp = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", suffix=f"-{os.getpid()}", dir=cache_dir))
        (tmp / ENTRY_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "key": key}) + "\n")
        for name in names:
            src = work / name
            if src.exists():
                shutil.copy2(src, tmp / name)
        os.rename(tmp, cache_dir / key)  # fails if another compile stored the same key meanwhile
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:  # our own temporary directory, made above
            shutil.rmtree(tmp, ignore_errors=True)
    cache_limits.evict(cache_dir, max_bytes or cache_limits.max_bytes(None), keep=key)


def add(cache_dir: Path, key: str, work: Path, names: list[str]) -> None:
    """Add files made after the entry was stored (TensorRT engines) to an existing entry."""
    entry = Path(cache_dir) / key
    if not entry.exists():
        return
    for name in names:
        if not (entry / name).exists():
            try:
                tmp = entry / f".{name}.tmp-{os.getpid()}"
                shutil.copy2(work / name, tmp)
                os.replace(tmp, entry / name)
            except OSError:
                pass


def restore(entry: Path, work: Path) -> list[str]:
    """Copy a cache entry into the work directory (copies: editing an output never alters the cache)."""
    names = []
    for src in sorted(entry.iterdir()):
        if src.name == ENTRY_MARKER or not src.is_file():
            continue
        shutil.copy2(src, work / src.name)
        names.append(src.name)
    return names


def cached_json(folder: Path | None, key: str, compute, encode, decode) -> tuple[object, bool]:
    """`decode` of the JSON stored as `folder/<key>.json`, else `compute()` now and stored (with `encode`) when
    `folder` is given; (value, hit). A damaged entry is computed again and replaced."""
    path = Path(folder) / f"{key}.json" if folder else None
    if path and path.is_file():
        try:
            return decode(json.loads(path.read_text())), True
        except (ValueError, KeyError):
            pass
    value = compute()
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(encode(value), indent=1))
    return value, False
