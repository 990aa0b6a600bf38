"""Latency statistics and interleaved timing (A B A B ...) so drift hits every variant alike."""
from __future__ import annotations

import time

import numpy as np

HIGH_CV = 0.10  # trtexec warns when the coefficient of variance exceeds 10%
PREEMPTED_OVERRUN = 3.0  # a loaded machine: up to this multiple of budget_s for min_iters unpreempted rounds
PREEMPTION_COST = 1.05  # every round kept: warn when the preempted rounds' median is this much above the others'


def summarize(samples_ms: list[float], batch: int = 1) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "min": float(a.min()),
            "cv": float(a.std() / mean) if mean > 0 else 0.0, "iterations": int(a.size),
            "throughput_per_s": batch * 1000.0 / float(np.percentile(a, 50))}


def involuntary_switches() -> int:
    """Involuntary context switches of this process so far (the kernel preempted one of its threads); 0 where the
    OS does not count them (no `resource` module: Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def preemption_counter(threads: int):
    """The `switches` for timing calls that run on `threads` threads: the process's count at one thread; none at
    more, where onnxruntime's own pool threads preempt one another (ViT-B/16 at 2 threads on an idle 2-core
    machine: every round counted) and the calling thread's own count missed a busy process on its core."""
    return involuntary_switches if threads == 1 else (lambda: 0)


def time_interleaved(variants: dict, warmup: int = 5, min_iters: int = 20, max_iters: int = 2000,
                     budget_s: float = 10.0, progress=None, switches=involuntary_switches,
                     tally: dict | None = None) -> dict[str, list[float]]:
    """Call each zero-argument callable in turn, round after round; milliseconds per call per variant.

    Round r starts at variant r mod k (A B, B A, A B, ... for two), so every variant runs in every
    position of the round, after every other, equally often: what runs before a call (warm or evicted
    caches, the loop's own bookkeeping) is not a fixed bias of one variant. Runs at least `min_iters`
    rounds, then stops when `budget_s` is spent or at `max_iters`.

    A round in which the kernel preempted the process during a call (`switches()` moved) is dropped: the call
    then also timed whatever ran in its place. On a core shared with another busy process a scheduler time
    slice (~4 ms) cut into most calls of a 4 ms model and few of a 2 ms one, and p50 / p50 read a 2x
    speedup as 4x; the unpreempted rounds read 2x. Past `budget_s` the loop goes on for min_iters unpreempted
    rounds while their rate so far reaches that many by PREEMPTED_OVERRUN x `budget_s`; otherwise (long calls,
    which a daemon's wake-up preempts on an idle machine too) every round is kept. `tally` (a dict) gets
    rounds_timed, rounds_preempted, preempted_kept and, when kept, preempted_slowdown: the preempted rounds'
    median time over the others' (None without any other).
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    items = list(variants.items())
    every = {name: [] for name in variants}
    preempted_in = []  # per round
    start = time.perf_counter()
    rounds = clean = 0
    while clean < max_iters:
        elapsed = time.perf_counter() - start
        if rounds >= min_iters and elapsed >= budget_s and (
                clean >= min_iters or clean * PREEMPTED_OVERRUN * budget_s < min_iters * elapsed):
            break
        shift = rounds % len(items)
        preempted = False
        for name, fn in items[shift:] + items[:shift]:
            before = switches()
            t0 = time.perf_counter()
            fn()
            every[name].append((time.perf_counter() - t0) * 1000.0)
            preempted = preempted or switches() != before
        preempted_in.append(preempted)
        rounds, clean = rounds + 1, clean + (not preempted)
        if progress:
            progress(rounds)
    fallback = clean < min_iters
    if tally is not None:
        tally.update(rounds_timed=rounds, rounds_preempted=rounds - clean, preempted_kept=fallback)
        if fallback:
            tally["preempted_slowdown"] = _slowdown(every, preempted_in)
    if fallback:
        return every
    return {name: [ms for ms, p in zip(times, preempted_in) if not p] for name, times in every.items()}


def _slowdown(every: dict, preempted_in: list[bool]) -> float | None:
    """Median round time of the preempted rounds over that of the others (None: no round of one kind)."""
    round_ms = np.sum([every[name] for name in every], axis=0)
    flags = np.asarray(preempted_in, dtype=bool)
    if flags.all() or not flags.any():
        return None
    return float(np.median(round_ms[flags]) / np.median(round_ms[~flags]))


def preemption_warnings(tally: dict) -> list[str]:
    """A warning when every round was kept and the preempted ones were measurably slower than the others. With no
    clean round to compare (a daemon's wake-up preempts every 170 ms ViT-B/16 call on an idle core) there is none;
    a costly preemption then shows in the coefficient of variation, which warns on its own."""
    slowdown = tally.get("preempted_slowdown")
    if not tally.get("preempted_kept") or slowdown is None or slowdown <= PREEMPTION_COST:
        return []
    return [f"{tally['rounds_preempted']} of {tally['rounds_timed']} timing rounds were preempted (the kernel ran "
            f"something else during a call), {slowdown - 1:.0%} slower than the others, and kept (too few were "
            f"not): latencies include that time; use an idle machine or core"]


def high_variance_warnings(stats: dict[str, dict]) -> list[str]:
    return [f"{name}: coefficient of variation {s['cv']:.1%} is above {HIGH_CV:.0%}; the machine is noisy, "
            f"consider more iterations (--bench-seconds) or an idle machine"
            for name, s in stats.items() if s["cv"] > HIGH_CV]


def benchmark_runners(runners: dict, feed: dict, threads: int, opts, progress, label: str) -> dict:
    """Every runner (`timed_call(feed)`) timed interleaved on the same feed: per-variant statistics, warnings,
    and the loop's settings (merge the runtime's own into them)."""
    tally = {}
    with progress.stage("benchmark", f"benchmarking {' vs '.join(runners)}{label} (interleaved, {threads} threads)"):
        samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=opts.warmup,
                                   min_iters=opts.min_iters, budget_s=opts.bench_seconds, tally=tally,
                                   switches=preemption_counter(threads))
    batch = next(iter(feed.values())).shape[0] if feed else 1
    stats = {name: summarize(s, batch) for name, s in samples.items()}
    return {"stats": stats, "warnings": high_variance_warnings(stats) + preemption_warnings(tally),
            "settings": {"threads": threads, "warmup": opts.warmup, "iterations": len(next(iter(samples.values()))),
                         "interleaved": True, "batch": batch, "preemption_filter": threads == 1, **tally}}
