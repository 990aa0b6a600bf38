"""Latency statistics and the interleaved timing loop."""
from __future__ import annotations

import pytest

from prune2deploy.timing import high_variance_warnings, summarize, time_interleaved


def test_summarize_percentiles_and_cv():
    s = summarize([float(i) for i in range(1, 101)], batch=2)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["cv"] == pytest.approx(28.866 / 50.5, rel=1e-3)
    assert s["throughput_per_s"] == pytest.approx(2 * 1000 / 50.5)


def test_variants_alternate_and_respect_min_iters():
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               warmup=2, min_iters=5, budget_s=0.0)
    # 2 warm-up rounds, then 5 timed rounds whose order rotates: a b, b a, a b, b a, a b
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a"] * 2 + ["a", "b"]
    assert len(samples["a"]) == len(samples["b"]) == 5


def test_every_variant_runs_in_every_position_equally_often():
    calls = []
    variants = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    samples = time_interleaved(variants, warmup=0, min_iters=6, budget_s=0.0)
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["a", "a", "b", "b", "c", "c"]
    assert all(len(s) == 6 for s in samples.values())


def test_high_cv_warns():
    assert high_variance_warnings({"x": {"cv": 0.5}, "y": {"cv": 0.01}})[0].startswith("x: coefficient")
    assert len(high_variance_warnings({"y": {"cv": 0.01}})) == 0
