"""Latency statistics and interleaved timing (A B A B ...) so drift hits every variant alike."""
from __future__ import annotations

import time

import numpy as np

HIGH_CV = 0.10  # trtexec warns when the coefficient of variance exceeds 10%


def summarize(samples_ms: list[float], batch: int = 1) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "min": float(a.min()),
            "cv": float(a.std() / mean) if mean > 0 else 0.0, "iterations": int(a.size),
            "throughput_per_s": batch * 1000.0 / float(np.percentile(a, 50))}


def time_interleaved(variants: dict, warmup: int = 5, min_iters: int = 20, max_iters: int = 2000,
                     budget_s: float = 10.0, progress=None) -> dict[str, list[float]]:
    """Call each zero-argument callable in turn, round after round; milliseconds per call per variant.

    Round r starts at variant r mod k (A B, B A, A B, ... for two), so every variant runs in every
    position of the round, after every other, equally often: what runs before a call (warm or evicted
    caches, the loop's own bookkeeping) is not a fixed bias of one variant. Runs at least `min_iters`
    rounds, then stops when `budget_s` is spent or at `max_iters`.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    items = list(variants.items())
    samples = {name: [] for name in variants}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_iters and (rounds < min_iters or time.perf_counter() - start < budget_s):
        shift = rounds % len(items)
        for name, fn in items[shift:] + items[:shift]:
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1000.0)
        rounds += 1
        if progress:
            progress(rounds)
    return samples


def high_variance_warnings(stats: dict[str, dict]) -> list[str]:
    return [f"{name}: coefficient of variation {s['cv']:.1%} is above {HIGH_CV:.0%}; the machine is noisy, "
            f"consider more iterations (--bench-seconds) or an idle machine"
            for name, s in stats.items() if s["cv"] > HIGH_CV]
