"""--max-drop without --ratio: the fastest candidate (ratio x runtime x precision) within the floor, chosen on
validation data only, resumable, and one line when nothing fits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from digits import digits, trained_digits_cnn

from prune2deploy.config.options import CompileOptions
from prune2deploy.errors import UserError
from prune2deploy.runtime.progress import Progress
from prune2deploy.search import max_drop as search
from prune2deploy.search.max_drop import Candidate, select


def _c(ratio, p50, drop, fits=None, metric=None, precision="fp32"):
    return Candidate(ratio, "ort-cpu", precision, deployed=precision, metric=metric if metric is not None else 90 - drop,
                     drop=drop, fits=drop <= 0.5 if fits is None else fits, status="measured", p50_ms=p50,
                     vs_dense_fp32=10 / p50)


def test_select_is_the_fastest_within_the_floor():
    candidates = [_c(0.0, 10.0, 0.0), _c(0.5, 4.0, 0.4), _c(0.7, 2.0, 3.0), _c(0.3, 6.0, 0.1, precision="int8")]
    chosen, why = select(candidates, 0.5)
    assert (chosen.ratio, chosen.p50_ms) == (0.5, 4.0)
    assert "fastest of 3 candidates within --max-drop 0.5" in why and "1 faster candidate(s) dropped more" in why


def test_select_breaks_ties_by_metric_then_smaller_ratio():
    chosen, _ = select([_c(0.5, 4.0, 0.4, metric=89.0), _c(0.6, 4.0, 0.2, metric=89.8)], 0.5)
    assert chosen.ratio == 0.6
    chosen, _ = select([_c(0.6, 4.0, 0.2, metric=89.8), _c(0.5, 4.0, 0.2, metric=89.8)], 0.5)
    assert chosen.ratio == 0.5


def test_select_names_the_best_drop_when_nothing_fits():
    failed = Candidate(0.7, "ov-cpu", "int8", status="failed: the deployed int8 dense model drifts")
    chosen, why = select([_c(0.5, 4.0, 1.2), _c(0.3, 6.0, 0.9), failed], 0.5)
    assert chosen is None and "smallest drop found is 0.9 (0.3 ort-cpu fp32)" in why
    assert select([failed], 0.5) == (None, "no candidate could be measured")


def test_configs_cover_each_runtime_at_auto_and_int8():
    both = {"ort-cpu": ("fp32", "int8"), "ov-cpu": ("fp32", "bf16", "int8")}
    assert search.configs(both) == [("ort-cpu", "auto"), ("ort-cpu", "int8"), ("ov-cpu", "auto"),
                                           ("ov-cpu", "int8")]
    assert search.configs({"ov-cpu": ("fp32", "bf16", "int8")}) == [("ov-cpu", "auto"), ("ov-cpu", "int8")]
    assert search.configs({"trt-ampere": ("fp16",)}) == [("trt-ampere", "auto")]


class _Interrupted(KeyboardInterrupt):
    pass


def test_an_interrupted_search_starts_again_where_it_stopped(tmp_path, monkeypatch):
    options = CompileOptions(max_drop=0.5, recover="none", search_minutes=5, data="d.pt")
    calls = []

    def score(c, full, stop_at=None):
        calls.append(c.name)
        if stop_at is not None and len(calls) == stop_at:
            raise _Interrupted()
        c.out_dir = str(tmp_path / c.name.replace(" ", "_"))
        Path(c.out_dir).mkdir(exist_ok=True)
        drop = c.ratio * 2
        return {"accuracy": {"metric": "top1", "pruned": 90 - drop, "drop": drop}, "precision": {"deployed": "fp32"},
                "verification": {"passed": True}, "mac_reduction": 1 / (1 - c.ratio)}

    def fake_time(self, candidates):  # latency from the ratio: the more pruned, the faster
        for c in candidates:
            if c.status == "measured":
                c.p50_ms, c.vs_dense_fp32 = 10 * (1 - c.ratio), 1 / (1 - c.ratio)

    monkeypatch.setattr(search.Search, "_time", fake_time)
    from prune2deploy.pipeline import _JsonState

    state = _JsonState(tmp_path / "state.json")
    pairs = [("ort-cpu", "auto")]
    with pytest.raises(_Interrupted):
        search.Search(options, lambda c, f: score(c, f, stop_at=3), state, Progress(enabled=False), None).run(pairs)
    assert len(json.loads(state.path.read_text())) == 2  # two candidates measured before the kill, kept
    calls.clear()
    chosen, record = search.Search(options, score, state, Progress(enabled=False), None).run(pairs)
    # the two measured ones (0 and 0.5) were not compiled again; 0.7 and 0.6 wait (0.5 missed the floor) while
    # 0.15 and 0.2 refine the gap between 0 (fits) and 0.3; then the budget search's widths at 0.3's MACs
    assert calls == ["0.3 ort-cpu auto", "0.15 ort-cpu auto", "0.2 ort-cpu auto", "0.7 ort-cpu auto",
                     "0.6 ort-cpu auto", "0.3 per-group ort-cpu auto"]
    assert all(c["status"] == "measured" for c in record["candidates"])
    assert chosen.ratio == 0.2 and chosen.drop == pytest.approx(0.4)  # drop = ratio * 2 <= 0.5
    assert len(record["candidates"]) == len(search.RATIOS) + 3 and record["selected_on"] == "validation data only"
    assert len(json.loads(state.path.read_text())) == len(record["candidates"])  # nothing saved while deferred


def test_a_per_group_candidate_takes_the_first_ratio_over_the_floor_at_its_fastest_configuration():
    grid = [_c(0.0, 10.0, 0.0), _c(0.3, 6.0, 0.4), _c(0.5, 4.0, 0.9), _c(0.5, 3.0, 1.4, precision="int8"),
            _c(0.7, 2.0, 3.0)]
    for c, reduction in zip(grid, (1.0, 2.0, 4.0, 4.0, 10.0)):
        c.mac_reduction = reduction
    extra = search.per_group_candidate(grid)
    assert (extra.ratio, extra.precision, extra.allocation, extra.macs_fraction) == (0.5, "int8", "per-group", 0.25)
    grid[3].mac_reduction = 2.599154280398334  # never rounded below uniform's own fraction (0.38474053...)
    assert search.per_group_candidate(grid).macs_fraction == 0.384741
    assert extra.name == "0.5 per-group ort-cpu int8" and extra.label != "0.5"
    assert search.per_group_candidate([_c(0.0, 10.0, 0.0), _c(0.3, 6.0, 0.4)]) is None  # all fit: no boundary
    extra.drop, extra.fits = 0.1, True
    assert search.refine_ratio(grid + [extra]) == 0.4  # a per-group candidate does not move the uniform boundary


def test_a_process_pool_scores_ratios_in_workers_and_keeps_every_measurement(tmp_path, monkeypatch):
    """--workers 2: each ratio's candidates run in a forked worker, one after another; every measurement lands in
    the parent's candidates and in state.json (workers update it under a lock), as inline."""
    import os

    from prune2deploy.pipeline import _JsonState
    from prune2deploy.search.executor import ProcessPoolExecutor

    # every ratio fits (drop = ratio * 2 <= 2): no ratio is skipped, so the pool scores exactly what inline does
    options = CompileOptions(max_drop=2.0, recover="none", search_minutes=5, data="d.pt")

    def score(c, full):
        c.out_dir = str(tmp_path / c.name.replace(" ", "_"))
        Path(c.out_dir).mkdir(exist_ok=True)
        (Path(c.out_dir) / "pid").write_text(str(os.getpid()))
        return {"accuracy": {"metric": "top1", "pruned": 90 - c.ratio * 2, "drop": c.ratio * 2},
                "precision": {"deployed": c.precision}, "verification": {"passed": True}}

    def fake_time(self, candidates):
        for c in candidates:
            if c.status == "measured":
                c.p50_ms, c.vs_dense_fp32 = 10 * (1 - c.ratio), 1 / (1 - c.ratio)

    monkeypatch.setattr(search.Search, "_time", fake_time)
    pairs = [("ort-cpu", "fp32"), ("ort-cpu", "int8")]
    runs = {}
    for name, executor in (("inline", None), ("pool", ProcessPoolExecutor(2))):
        state = _JsonState(tmp_path / name / "state.json")
        chosen, record = search.Search(options, score, state, Progress(enabled=False), None, executor=executor).run(pairs)
        runs[name] = (chosen, record, json.loads(state.path.read_text()))
    (chosen, record, saved), (inline_chosen, inline_record, inline_saved) = runs["pool"], runs["inline"]
    strip = lambda cs: [{k: v for k, v in c.items() if k != "wall_s"} for c in cs]  # noqa: E731
    assert strip(record["candidates"]) == strip(inline_record["candidates"]) and chosen.name == inline_chosen.name
    assert set(saved) == set(inline_saved) and len(saved) == len(record["candidates"])
    assert record["executor"] == "local process pool, 2 workers"
    workers = {(Path(tmp_path) / f"{c['ratio']:g}_ort-cpu_{c['precision']}" / "pid").read_text()
               for c in record["candidates"] if c["ratio"] in (0.3, 0.5)}
    assert workers and str(os.getpid()) not in workers  # the grid's ratios were scored in workers


def test_refining_halves_the_widest_gap_between_fitting_and_not():
    def at(ratio, fits):
        return Candidate(ratio, "ort-cpu", "fp32", drop=0.1 if fits else 5.0, fits=fits, status="measured")

    # fits at any precision counts: 0.3 fits in fp32 only
    grid = [at(0.0, True), at(0.3, True), at(0.3, False), at(0.5, False), at(0.6, False), at(0.7, False)]
    assert search.refine_ratio(grid) == 0.4
    assert search.refine_ratio([at(0.0, True), at(0.3, False)]) == 0.15
    assert search.refine_ratio([at(0.5, True), at(0.6, False)]) is None  # 0.1 apart: close enough
    assert search.refine_ratio([at(0.0, False), at(0.3, False)]) is None  # nothing fits: nothing to refine
    assert search.refine_ratio([at(0.0, True), at(0.7, True)]) is None  # everything fits: nothing above


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    x, y = digits()
    for name, part in (("train", slice(0, 1200)), ("val", slice(1200, 1500)), ("test", slice(1500, None))):
        torch.save((x[part], y[part]), root / f"{name}.pt")
    return root


@pytest.mark.slow
def test_a_looser_floor_gives_a_faster_artifact_and_test_data_only_reports(digit_files, tmp_path, monkeypatch):
    from prune2deploy.data import load
    from prune2deploy.pipeline import Output, compile

    read = []
    original = load.read_samples
    monkeypatch.setattr(load, "read_samples", lambda spec, *a, **k: read.append(spec) or original(spec, *a, **k))
    common = dict(target="ort-cpu", data=str(digit_files / "train.pt"), val_data=str(digit_files / "val.pt"),
                  test_data=str(digit_files / "test.pt"), recover="none", search_minutes=10, bench_seconds=0.5,
                  output=Output(cache_dir=tmp_path / "cache"))
    reports = {}
    for name, floor in (("tight", 0.5), ("loose", 60.0)):
        reports[name] = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), out_dir=tmp_path / name,
                                max_drop=floor, **common).report
    tight, loose = reports["tight"]["search"]["chosen"], reports["loose"]["search"]["chosen"]
    per_group = [c for c in reports["tight"]["search"]["candidates"] if c["allocation"] == "per-group"]
    assert len(per_group) == 1 and per_group[0]["status"] == "measured"  # the budget search's widths, measured
    assert per_group[0]["mac_reduction"] == pytest.approx(1 / per_group[0]["macs_fraction"], rel=0.1)
    timed = [c["p50_ms"] for c in reports["loose"]["search"]["candidates"] if c["p50_ms"] is not None]
    assert tight["drop"] <= 0.5 and loose["p50_ms"] == min(timed)  # the loose floor: the fastest of all
    assert loose["mac_reduction"] > tight["mac_reduction"]  # the loose floor ships a smaller model
    for name, report in reports.items():
        s = report["search"]
        assert report["accuracy"]["max_drop"] == s["max_drop"] and report["accuracy"]["fits_max_drop"]
        uniform = [c for c in s["candidates"] if c["allocation"] == "uniform"]
        ratios = sorted({c["ratio"] for c in uniform})  # the grid, and the ratios refining it
        assert set(search.RATIOS) <= set(ratios) and len(ratios) <= len(search.RATIOS) + search.REFINE
        assert len(uniform) == len(ratios) * 2  # ort-cpu at fp32 and int8
        measured = [c for c in s["candidates"] if c["status"] == "measured"]
        assert measured and all(c["p50_ms"] is not None for c in measured)  # over the floor or not: all timed
        assert any(not c["fits"] for c in reports["tight"]["search"]["candidates"])
        assert s["plot"] == "frontier.png" and (tmp_path / name / "frontier.png").exists()
        assert "## Search" in (tmp_path / name / "report.md").read_text()
        assert report["accuracy"]["test"]["samples"] == 297  # measured on the final artifact, reported apart
    test_reads = [spec for spec in read if spec.endswith("test.pt")]
    assert len(test_reads) == 2  # once per final compile; no candidate read the test data


@pytest.mark.slow
def test_each_ratio_is_recovered_once_for_every_runtime_and_precision(digit_files, tmp_path, monkeypatch):
    """The candidates of one ratio (ort-cpu fp32 and int8 here) start from one recovery: the first trains, the
    others load its recovered weights from the search's checkpoint."""
    from prune2deploy.pipeline import Output, compile
    from prune2deploy.recovery import recover_pass

    trained = []
    original = recover_pass.recover

    def spy(student, *args, **kwargs):
        record = original(student, *args, **kwargs)
        if not (record.get("resumed_from") or {}).get("done"):
            trained.append(sum(p.numel() for p in student.parameters()))
        return record

    monkeypatch.setattr(recover_pass, "recover", spy)
    report = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), target="ort-cpu", out_dir=tmp_path / "out",
                     data=str(digit_files / "train.pt"), val_data=str(digit_files / "val.pt"), max_drop=1.0,
                     max_steps=4, search_minutes=10, bench_seconds=0.3, output=Output(cache_dir=tmp_path / "cache"))
    candidates = report.report["search"]["candidates"]
    pruned = [c for c in candidates if c["ratio"] > 0 and c["allocation"] == "uniform"]  # short, or survivors: full
    ratios = {c["ratio"] for c in pruned}
    assert len(pruned) == 2 * len(ratios) and all(c["recovery_steps"] == 4 for c in pruned)
    per_group = [c for c in candidates if c["allocation"] == "per-group" and c["status"] == "measured"]
    survivors = len(report.report["search"]["survivors"])
    final_trains = 0 if report.report["cache"]["hit"] or report.report["search"]["chosen"]["ratio"] == 0 else 1
    # once per ratio, not once per candidate (the per-group candidate is one more allocation of its own)
    assert len(trained) == len(ratios) + len(per_group) + survivors + final_trains


def test_nothing_fits_is_one_line():
    error = search.nothing_fits("no candidate stays within --max-drop 0.1: the smallest drop found is 0.4 (0.3 ...)")
    assert isinstance(error, UserError) and error.exit_code == 2 and "smallest drop found is 0.4" in error.one_line()


def test_survivors_are_the_fastest_of_each_ratio_closest_to_the_floor():
    options = CompileOptions(max_drop=0.5, data="d.pt")
    run = search.Search(options, None, None, Progress(enabled=False), None)
    short = [_c(0.3, 3.0, 2.4), _c(0.3, 2.0, 3.5, precision="int8"), _c(0.5, 1.5, 3.1, precision="int8"),
             _c(0.5, 2.2, 3.0), _c(0.6, 1.2, 7.0), _c(0.7, 1.0, 14.0)]
    for c in short:
        c.recovery = "short"
    fits = _c(0.0, 4.0, 0.4)
    refining = _c(0.15, 3.5, 0.9)  # closest of all, but a refining ratio: not a survivor
    refining.recovery = "short"
    picked = run._survivors(short + [fits, refining], fits)
    assert [(c.ratio, c.p50_ms) for c in picked] == [(0.3, 2.0), (0.5, 1.5), (0.6, 1.2)]  # closest to the floor first


def test_a_cache_hit_measures_the_test_data_again(digit_files, tmp_path):
    """The search's final compile reuses its survivor's compile (made without --test-data, without a benchmark):
    test data and benchmark flags are outside the cache key, and a hit measures the test data itself."""
    from prune2deploy.pipeline import Output, compile

    common = dict(target="ort-cpu", ratio=0.3, data=str(digit_files / "train.pt"), recover="none",
                  val_data=str(digit_files / "val.pt"), output=Output(cache_dir=tmp_path / "cache"))
    first = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), out_dir=tmp_path / "a", skip_benchmark=True,
                    **common).report
    assert "test" not in first["accuracy"]
    second = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), out_dir=tmp_path / "b", bench_seconds=0.3,
                     test_data=str(digit_files / "test.pt"), **common).report
    assert second["cache"]["hit"] and second["accuracy"]["test"]["samples"] == 297
    assert second["accuracy"]["test"]["drop"] == pytest.approx(
        second["accuracy"]["test"]["dense"] - second["accuracy"]["test"]["pruned_deployed"])
