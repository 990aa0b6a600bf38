"""The budget search's final tie-break (search/tie_break.py) on scikit-learn's digits: greedy and uniform widths
that both meet the budget get the compile's own recovery, the better on validation is kept, and its validation
metric is the one the compile's recovery then reaches (same settings, same seed); the settings it derives from the
recovery options; its flag's one-line error."""
from __future__ import annotations

import pytest
import torch

import prune2deploy
from helpers import assert_user_error
from prune2deploy.config.options import CompileOptions
from prune2deploy.search import tie_break as tie_break_module
from prune2deploy.search.tie_break import TIE_BREAK_MAX_STEPS, tie_break_config
from recovery_digits import digits_tensors, trained_deep_digits_cnn


@pytest.fixture(scope="module")
def digits_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    tx, ty, vx, vy = digits_tensors()
    torch.save({"inputs": tx, "labels": ty}, root / "train.pt")
    torch.save({"inputs": vx, "labels": vy}, root / "val.pt")
    return root


def _compile(root, out, **extra):
    """MACs budget 0.25 (counted, no timer): greedy 16/24/24 and uniform 24/24/24 both land in the band."""
    options = dict(macs_fraction=0.25, round_to=8, data=str(root / "train.pt"), val_data=str(root / "val.pt"),
                   batch_size=64, max_steps=40, lr=1e-3, score_steps=0, skip_benchmark=True)
    return prune2deploy.compile(trained_deep_digits_cnn(), digits_tensors()[0][:1], out_dir=out,
                                output=prune2deploy.Output(use_cache=False, cache_dir=out.parent / "cache"),
                                **{**options, **extra})


@pytest.mark.slow
def test_both_allocations_recovered_alike_and_the_better_on_validation_kept(digits_split, tmp_path):
    result = _compile(digits_split, tmp_path / "out")
    budget = result.report["budget"]
    tie = budget["tie_break"]
    greedy, uniform = tie["greedy"], tie["uniform"]
    assert tie["split"] == "validation" and tie["metric"] == "top1"
    assert greedy["widths"] != uniform["widths"] and len(set(uniform["widths"].values())) == 1
    assert greedy["steps"] == uniform["steps"] == 40 and tie["recovery"]["max_steps"] == 40
    assert tie["settings"] == "the recovery's own settings"
    assert all(1.0 <= t["achieved_over_requested"] <= 1.08 for t in (greedy, uniform))  # both in the band
    assert greedy["val_metric"] > greedy["val_after_bn"] and uniform["val_metric"] > uniform["val_after_bn"]
    kept = max(("greedy", "uniform"), key=lambda f: tie[f]["val_metric"])
    assert greedy["val_metric"] != uniform["val_metric"] and tie["kept"] == kept
    assert {g["name"]: g["kept"] for g in budget["per_group"]} == tie[kept]["widths"]
    assert budget["search"]["uniform_compared"]["chosen"] == (kept == "uniform")
    # only the widths are kept: the compile recovers from the pruned dense weights, and reaches the same number
    assert result.report["accuracy"]["pruned"] == pytest.approx(tie[kept]["val_metric"])
    assert result.report["recovery"]["steps"] == 40
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Tie-break (the recovery's own settings: 40 and 40 recovery steps)" in md and f"{kept} kept." in md


@pytest.mark.slow
def test_uniform_widths_kept_when_they_recover_better(digits_split, tmp_path, monkeypatch):
    real = tie_break_module.TieBreak.__call__

    def uniform_wins(self, candidates):  # the real recoveries, then uniform widths given the lead
        recovered = self.recovered
        self.recovered = lambda widths: {**recovered(widths), "val_metric": 101.0} \
            if widths == candidates["uniform"] else recovered(widths)
        return real(self, candidates)
    monkeypatch.setattr(tie_break_module.TieBreak, "__call__", uniform_wins)
    budget = _compile(digits_split, tmp_path / "out").report["budget"]
    assert budget["tie_break"]["kept"] == "uniform" and budget["search"]["uniform_compared"]["chosen"]
    assert {g["name"]: g["kept"] for g in budget["per_group"]} == budget["tie_break"]["uniform"]["widths"]
    assert budget["steps"] == []  # uniform widths are no greedy path


@pytest.mark.slow
def test_no_tie_break_without_recovery_or_when_turned_off(digits_split, tmp_path):
    budget = _compile(digits_split, tmp_path / "out", tie_break_steps=0).report["budget"]
    assert budget["tie_break"] == {"kept": None, "skipped": "--tie-break-steps 0"}
    assert "No tie-break after recovery: --tie-break-steps 0." in (tmp_path / "out" / "report.md").read_text()


def test_tie_break_settings_follow_the_recovery_options():
    def config(**options):
        return tie_break_config(CompileOptions(**options), "kd", train_batches=100)
    assert config(epochs=2)[0].max_steps == 200 and config(epochs=2)[1] == "the recovery's own settings"
    assert config(epochs=2, max_steps=50)[0].max_steps == 50
    long, why = config(epochs=50)
    assert long.max_steps == TIE_BREAK_MAX_STEPS and why == f"the recovery's settings, {TIE_BREAK_MAX_STEPS} steps"
    given = config(epochs=1, tie_break_steps=350, lr=1e-3, kd_alpha=0.5)[0]
    assert given.max_steps == 350 and given.epochs == 4 and given.lr == 1e-3 and given.kd_alpha == 0.5
    assert config(tie_break_steps=0) == (None, "--tie-break-steps 0")
    assert tie_break_config(CompileOptions(), "none", 0)[0] is None


def test_negative_tie_break_steps_is_a_one_line_error(p2d, tmp_path):
    assert_user_error(p2d("compile", "x.pt", "--target-speedup", "2", "--tie-break-steps", "-1"),
                      "tie-break-steps -1 must be >= 0")


def test_only_allocations_at_least_as_fast_as_asked_compete_nearest_to_the_request_first():
    from prune2deploy.search.landing import EXACT_BAND, TIMED_BAND, Band, Landing, Point
    from prune2deploy.search.tie_break import contender, eligible

    timed, exact = Band(*TIMED_BAND), Band(*EXACT_BAND)
    assert not timed.holds(1.09) and eligible(1.09, timed) and eligible(1.0, timed)  # faster than the band
    assert not eligible(0.999, timed) and eligible(1.3, timed)  # slower than asked never; faster always
    assert eligible(1.0, exact) and not eligible(0.99, exact)
    points = [Point(x, q, {"a": w}, {}) for x, q, w in ((0.5, 1.16, 8), (0.6, 1.09, 16), (0.7, 0.97, 24))]
    landed = Landing(points=points, chosen=points[2])  # chosen: the closest to the aim, slower than asked
    assert contender(landed, timed) is points[1]  # within 1.00-1.10 before one faster than that
    # a family that jumped over 1.00-1.10 (a latency staircase): its slowest allocation faster than asked
    jumped = [Point(0.6, 1.31, {"a": 8}, {}), Point(0.7, 1.14, {"a": 16}, {}), Point(0.8, 0.93, {"a": 24}, {})]
    assert contender(Landing(points=jumped, chosen=jumped[2]), timed) is jumped[1]
    assert contender(Landing(points=jumped[2:], chosen=jumped[2]), timed) is None  # none meets the budget


def _landings_rewritten(monkeypatch, rewrite):
    """The budget pass with each family's landing rewritten by `rewrite(family, landing)` after it is measured
    (latency staircases, mocked on the exact MACs budget); no refine() for rewritten landings."""
    import prune2deploy.search.budget_pass as budget_pass

    real_land, real_refine = budget_pass.land, budget_pass.refine
    calls = []

    def land(to, *args, **kwargs):
        landing = real_land(to, *args, **kwargs)
        calls.append(landing)
        rewrite(("greedy", "uniform")[len(calls) - 1], landing)  # the greedy path is landed first
        return landing
    monkeypatch.setattr(budget_pass, "land", land)
    monkeypatch.setattr(budget_pass, "refine", lambda *a, **k: None)


@pytest.mark.slow
def test_a_family_that_jumped_over_the_range_competes_with_its_slowest_allocation_faster_than_asked(
        digits_split, tmp_path, monkeypatch):
    from prune2deploy.search.landing import Point

    def jumped(family, landing):  # uniform widths measured 1.14 (the landed ones) and 0.93 (wider): nothing between
        if family == "greedy":
            return
        landed = landing.chosen
        landing.points = [Point(landed.x, 1.14, landed.widths, landed.measured),
                          Point(1.0, 0.93, {k: w + 8 for k, w in landed.widths.items()}, landed.measured)]
        landing.chosen, landing.in_band = landing.points[1], False
    _landings_rewritten(monkeypatch, jumped)
    budget = _compile(digits_split, tmp_path / "out").report["budget"]
    tie = budget["tie_break"]
    assert tie["kept"] in ("greedy", "uniform") and tie["uniform"]["achieved_over_requested"] == 1.14
    assert 1.0 <= tie["greedy"]["achieved_over_requested"] <= 1.08
    assert budget["search"]["landed_in_band"] == (tie["kept"] == "greedy")
    assert {g["name"]: g["kept"] for g in budget["per_group"]} == tie[tie["kept"]]["widths"]


@pytest.mark.slow
def test_with_one_family_faster_than_asked_and_the_other_short_of_it_the_faster_is_kept(
        digits_split, tmp_path, monkeypatch):
    def short(family, landing):  # greedy measured 1.12 (too fast), uniform 0.97: closer to the aim, but slow
        for p in landing.points:
            p.q = 1.12 if family == "greedy" else 0.97
        landing.in_band = False
    _landings_rewritten(monkeypatch, short)
    budget = _compile(digits_split, tmp_path / "out").report["budget"]
    assert budget["tie_break"] == {"kept": None, "skipped": "only the greedy widths measured at or above the request"}
    assert budget["search"]["uniform_compared"]["chosen"] is False and not budget["search"]["landed_in_band"]
    assert budget["steps"]  # the greedy path reached the kept widths
