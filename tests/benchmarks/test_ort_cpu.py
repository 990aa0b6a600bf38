"""The side-by-side statistic of benchmarks/ort_cpu.py, on synthetic interleaved samples."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "ort_cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ort_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop(dense_ms: float, p2d_pruned_ms: float, hand_pruned_ms: float, rounds: int = 200, seed: int = 0) -> dict:
    """Four models timed round by round on a machine whose speed drifts and jitters."""
    rng = np.random.default_rng(seed)
    drift = 1 + 0.2 * np.sin(np.linspace(0, 6, rounds))  # slow, shared by the calls of a round
    def jitter():
        return rng.lognormal(0, 0.08, rounds)
    return {"p2d_dense": list(dense_ms * drift * jitter()), "p2d_pruned": list(p2d_pruned_ms * drift * jitter()),
            "hand_dense": list(dense_ms * drift * jitter()), "hand_pruned": list(hand_pruned_ms * drift * jitter())}


def verdict(bench, samples: dict) -> str:
    sp = bench.paired_speedups(samples, {"p2d": ("p2d_dense", "p2d_pruned"), "hand": ("hand_dense", "hand_pruned")})
    lo, hi = np.percentile(sp["boot"]["p2d"] - sp["boot"]["hand"], [0.5, 99.5])
    return bench.versus({"diff_ci99": [lo, hi], "speedup": sp["point"]["hand"]})


def test_identical_pipelines_tie(bench):
    assert [verdict(bench, loop(50, 15, 15, seed=s)) for s in range(5)] == ["tie"] * 5


def test_a_clearly_faster_pruned_model_is_higher_and_a_slower_one_lower(bench):
    assert verdict(bench, loop(50, 12, 15)) == "higher"
    assert verdict(bench, loop(50, 15, 12)) == "lower"


def test_point_speedups_are_ratios_of_medians(bench):
    samples = {"d": [10.0, 12.0, 11.0], "p": [5.0, 6.0, 5.5]}
    sp = bench.paired_speedups(samples, {"x": ("d", "p")})
    assert sp["point"]["x"] == pytest.approx(2.0)
    assert sp["boot"]["x"].shape == (2000,)


def test_a_lower_verdict_fails_the_target(bench):
    def row(lo, hi):
        return {"ratio": 0.5, "p2d": {"status": "ok"},
                "by_hand": {"status": "ok", "p2d_speedup": 2.0, "speedup": 2.2, "diff_ci99": [lo, hi]}}
    assert bench.beats_by_hand("m", [row(-0.3, 0.1)])["result"] == "PASS"
    assert bench.beats_by_hand("m", [row(-0.3, -0.1)])["result"] == "FAIL"


def test_a_difference_inside_the_equivalence_margin_is_a_tie(bench):
    # by hand 3.71x: the margin is 2% of it, 0.074; an interval wholly below 0 but inside it is a tie
    assert bench.versus({"speedup": 3.71, "diff_ci99": [-0.02, -0.001]}) == "tie"
    assert bench.versus({"speedup": 3.71, "diff_ci99": [-0.2, -0.08]}) == "lower"
    assert bench.versus({"speedup": 3.71, "diff_ci99": [0.08, 0.3]}) == "higher"
