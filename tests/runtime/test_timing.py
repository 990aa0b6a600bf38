"""Latency statistics and the interleaved timing loop."""
from __future__ import annotations

import time

import pytest

from prune2deploy.runtime.timing import high_variance_warnings, preemption_warnings, summarize, time_interleaved


def test_summarize_percentiles_and_cv():
    s = summarize([float(i) for i in range(1, 101)], batch=2)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["cv"] == pytest.approx(28.866 / 50.5, rel=1e-3)
    assert s["throughput_per_s"] == pytest.approx(2 * 1000 / 50.5)


def test_variants_alternate_and_respect_min_iters():
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               warmup=2, min_iters=5, budget_s=0.0, switches=lambda: 0)
    # 2 warm-up rounds, then 5 timed rounds whose order rotates: a b, b a, a b, b a, a b
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a"] * 2 + ["a", "b"]
    assert len(samples["a"]) == len(samples["b"]) == 5


def test_every_variant_runs_in_every_position_equally_often():
    calls = []
    variants = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    samples = time_interleaved(variants, warmup=0, min_iters=6, budget_s=0.0, switches=lambda: 0)
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["a", "a", "b", "b", "c", "c"]
    assert all(len(s) == 6 for s in samples.values())


def test_high_cv_warns():
    assert high_variance_warnings({"x": {"cv": 0.5}, "y": {"cv": 0.01}})[0].startswith("x: coefficient")
    assert len(high_variance_warnings({"y": {"cv": 0.01}})) == 0


class FakeScheduler:
    """Preempts the calls of `victim` in the rounds listed: the call runs `stolen_s` longer (another process's
    time slice) and the process's involuntary switch count moves."""

    def __init__(self, victim: str, rounds: set, stolen_s: float = 0.004):
        self.victim, self.rounds, self.stolen_s = victim, rounds, stolen_s
        self.switches, self.calls = 0, {}

    def variant(self, name: str, run_s: float):
        def call():
            n = self.calls[name] = self.calls.get(name, 0) + 1
            time.sleep(run_s)
            if name == self.victim and n in self.rounds:
                time.sleep(self.stolen_s)
                self.switches += 1
        return call


def test_preempted_rounds_are_dropped_so_a_time_slice_does_not_skew_the_ratio():
    # the 4 ms-ish "dense" call is preempted in most rounds (as on a shared core), the 2 ms one never: p50 / p50
    # over every round would read ~4x; over the unpreempted rounds ~2x
    sched = FakeScheduler("dense", rounds={n for n in range(1, 10_000) if n % 4})  # 3 rounds in 4 preempted
    tally = {}
    samples = time_interleaved({"dense": sched.variant("dense", 0.004), "pruned": sched.variant("pruned", 0.002)},
                               warmup=0, min_iters=8, budget_s=0.15, switches=lambda: sched.switches, tally=tally)
    kept = tally["rounds_timed"] - tally["rounds_preempted"]
    assert tally["preempted_kept"] is False and kept >= 8 and tally["rounds_preempted"] >= 2 * kept
    assert len(samples["dense"]) == len(samples["pruned"]) == kept
    assert max(samples["dense"]) < 4 + 3.5  # no sample carries the stolen slice (4 ms on top of 4 ms)
    ratio = sorted(samples["dense"])[4] / sorted(samples["pruned"])[4]
    assert 1.3 < ratio < 2.7


def test_a_machine_too_busy_for_clean_rounds_keeps_every_round():
    sched = FakeScheduler("a", rounds=set(range(1, 1000)), stolen_s=0.0)
    tally = {}
    samples = time_interleaved({"a": sched.variant("a", 0.0), "b": sched.variant("b", 0.0)}, warmup=0,
                               min_iters=5, budget_s=0.0, switches=lambda: sched.switches, tally=tally)
    assert len(samples["a"]) == 5 and tally == {"rounds_timed": 5, "rounds_preempted": 5, "preempted_kept": True,
                                                "preempted_slowdown": None}
    assert preemption_warnings(tally) == []  # nothing clean to compare: the CV warning speaks for noise
    assert preemption_warnings({"rounds_timed": 5, "rounds_preempted": 1, "preempted_kept": False}) == []


def test_harmless_preemptions_of_long_calls_keep_every_round_without_a_warning():
    # an idle machine: a daemon's wake-up preempts most long calls and costs them nothing measurable
    sched = FakeScheduler("a", rounds={n for n in range(1, 10_000) if n % 4}, stolen_s=0.0)
    tally = {}
    samples = time_interleaved({"a": sched.variant("a", 0.003), "b": sched.variant("b", 0.003)}, warmup=0,
                               min_iters=40, budget_s=0.05, switches=lambda: sched.switches, tally=tally)
    assert tally["preempted_kept"] and len(samples["a"]) == tally["rounds_timed"] >= 40
    assert 0.7 < tally["preempted_slowdown"] < 1.3
    slow = {**tally, "preempted_slowdown": 1.5}
    assert preemption_warnings({**tally, "preempted_slowdown": 1.01}) == []
    assert "50 of 67 timing rounds were preempted" in preemption_warnings(
        {"rounds_timed": 67, "rounds_preempted": 50, "preempted_kept": True, "preempted_slowdown": 1.5})[0]
    assert "50% slower than the others" in preemption_warnings(slow)[0]


def test_involuntary_switches_counts_up():
    from prune2deploy.runtime.timing import involuntary_switches

    first = involuntary_switches()
    assert isinstance(first, int) and 0 <= first <= involuntary_switches()


def test_ort_cpu_benchmark_reports_dropped_rounds_and_warns_when_it_kept_them(monkeypatch):
    import prune2deploy.backends.ort_cpu.driver as ort_cpu
    from prune2deploy.config.options import CompileOptions
    from prune2deploy.runtime.progress import Progress

    class Runner:
        def __init__(self, path, threads):
            pass

        def timed_call(self, feed):
            return lambda: None
    monkeypatch.setattr(ort_cpu, "OrtRunner", Runner)
    opts = CompileOptions(bench_seconds=0.0, min_iters=5, warmup=0, threads=1)
    paths = {"dense": "d.onnx", "pruned": "p.onnx"}
    bench = ort_cpu.benchmark_onnx(paths, {}, opts, Progress(enabled=False))
    assert bench["settings"]["rounds_timed"] >= 5 and "rounds_preempted" in bench["settings"]
    assert bench["settings"]["preemption_filter"] is True  # threads=1
    import prune2deploy.runtime.timing as timing

    monkeypatch.setattr(timing, "time_interleaved",  # most rounds preempted and slower: kept, and said so
                        lambda calls, tally, **kw: tally.update(rounds_timed=5, rounds_preempted=4, preempted_kept=True,
                                                                preempted_slowdown=1.4) or {n: [1.0] * 5 for n in calls})
    bench = ort_cpu.benchmark_onnx(paths, {}, opts, Progress(enabled=False))
    assert bench["settings"]["preempted_kept"] and any("preempted" in w for w in bench["warnings"])


def test_preemption_is_counted_only_for_one_thread_calls():
    from prune2deploy.runtime.timing import involuntary_switches, preemption_counter

    assert preemption_counter(1) is involuntary_switches
    many = preemption_counter(2)  # onnxruntime's pool threads would move the process's count themselves
    assert many() == 0 and many() == 0
