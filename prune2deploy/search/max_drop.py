"""--max-drop without --ratio or a budget: the fastest artifact that keeps the user's accuracy.

Candidates are (pruning ratio, runtime, precision). Each is compiled as the compile would compile it, with a short
recovery (SCORE_STEPS optimiser steps), and its metric measured on the deployed artifact (after recovery and
quantization, INT8 layers falling back to FP32 to meet the floor) on the validation data only. Then every
candidate's deployed pruned artifact, with the dense model in FP32 (and at each candidate's precision), is timed
in one interleaved loop on the target. Survivors are recovered fully (the user's recovery settings) and measured
again: among the candidates faster than the fastest one that fits, the fastest of each of the SURVIVORS ratios
that came closest to the floor. The fastest candidate within the floor wins and is compiled for real by the
caller.

After the grid, up to REFINE more ratios bisect the gap between the largest ratio that fits (at any runtime and
precision) and the smallest one above it that does not, where that gap is wide: a floor met only by the dense
model at a lower precision and lost at 0.3 tries 0.15.

A uniform ratio larger than one that missed the floor at every runtime and precision is deferred until after the
refinement (pruning more rarely recovers more in the same short recovery, but a full recovery may still fit it),
then scored if time is left; with --workers, within one worker's view only.

Once timed, one more candidate tries a per-group allocation (the budget search, at the MACs of the first uniform
ratio over the floor, on that ratio's fastest runtime and precision): the groups that cost the metric least give
up more width, which may keep the floor where uniform widths did not.

Bounded by --search-minutes: no candidate starts after SCORE_SHARE of it, no survivor after all of it. Every
measured candidate is kept in the cache (search/<key>/state.json beside the compile cache), so a search killed
midway starts again where it stopped; fully recovered compiles hit the compile cache too.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from prune2deploy.errors import P2DError, user_error
from prune2deploy.search.executor import InlineExecutor

RATIOS = (0.0, 0.5, 0.3, 0.7, 0.6)  # the order they are tried in: dense at lower precision and mid-range first
REFINE = 2  # then at most this many ratios halving the widest gap between a ratio that fits and one that does not
REFINE_GAP = 0.15  # ... while that gap is at least this wide (ratios on a 0.05 grid)
SCORE_STEPS = 200  # recovery steps of a scored candidate
SURVIVORS = 3
SCORE_SHARE = 0.7  # of --search-minutes: no new candidate starts after it
TIMING_SECONDS = 1.0  # per timed artifact in the joint loop


@dataclass
class Candidate:
    ratio: float
    target: str
    precision: str  # requested (auto resolves per runtime)
    allocation: str = "uniform"  # uniform | per-group: the budget search's widths at macs_fraction
    macs_fraction: float | None = None  # per-group: the MACs of uniform `ratio` (pruned / dense)
    deployed: str | None = None
    metric: float | None = None
    drop: float | None = None
    fits: bool = False
    status: str = "pending"  # measured | failed: ... | skipped: ...
    recovery: str = "short"  # short | full | none
    recovery_steps: int | None = None
    wall_s: float | None = None
    p50_ms: float | None = None
    vs_dense_fp32: float | None = None  # dense ORT FP32 p50 / this p50 (what a user has without p2d)
    vs_dense_same: float | None = None  # the dense model at this runtime and precision / this p50 (pruning alone)
    mac_reduction: float | None = None
    out_dir: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.label} {self.target} {self.deployed or self.precision}"

    @property
    def label(self) -> str:
        return label_of(self.ratio, self.allocation)

    def record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "out_dir"}


def label_of(ratio: float, allocation: str = "uniform") -> str:
    """'0.5', or '0.5 per-group' (the budget search's widths at uniform 0.5's MACs)."""
    return f"{ratio:g}" + (" per-group" if allocation == "per-group" else "")


def configs(precisions: dict) -> list[tuple[str, str]]:
    """(runtime target, precision) pairs to try: each runtime's auto and its INT8. `precisions`: runtime target
    name -> the precisions its driver runs here (for `cpu`: each CPU runtime it chooses from)."""
    pairs = []
    for runtime in precisions:
        pairs.append((runtime, "auto"))
        if "int8" in precisions.get(runtime, ()):
            pairs.append((runtime, "int8"))
    return pairs


def select(candidates: list[Candidate], max_drop: float) -> tuple[Candidate | None, str]:
    """The fastest measured candidate within the floor (ties: the better metric, then the smaller ratio), and
    why; (None, why) naming the smallest drop found when none fits."""
    timed = [c for c in candidates if c.status == "measured" and c.p50_ms is not None]
    fitting = [c for c in timed if c.fits]
    if not fitting:
        measured = [c for c in candidates if c.drop is not None]
        if not measured:
            return None, "no candidate could be measured"
        best = min(measured, key=lambda c: c.drop)
        return None, (f"no candidate stays within --max-drop {max_drop:g}: the smallest drop found is "
                      f"{best.drop:.3g} ({best.name})")
    best = min(fitting, key=lambda c: (round(c.p50_ms, 6), -(c.metric or 0.0), c.ratio))
    faster = [c for c in timed if c.p50_ms < best.p50_ms and not c.fits]
    why = (f"the fastest of {len(fitting)} candidates within --max-drop {max_drop:g} (drop {best.drop:.3g}); "
           f"{best.vs_dense_fp32:.2f}x dense ORT FP32" if best.vs_dense_fp32 else
           f"the fastest of {len(fitting)} candidates within --max-drop {max_drop:g} (drop {best.drop:.3g})")
    if faster:
        why += f"; {len(faster)} faster candidate(s) dropped more"
    return best, why


def boundary(candidates: list[Candidate], grid_only: bool = False) -> tuple[float, float] | None:
    """(the largest uniform ratio that fits at any runtime and precision, the smallest larger one where none
    does), or None when nothing fits or everything measured above fits. `grid_only`: among RATIOS only."""
    fits: dict[float, bool] = {}
    for c in candidates:
        if c.drop is not None and c.allocation == "uniform" and (c.ratio in RATIOS or not grid_only):
            fits[c.ratio] = fits.get(c.ratio, False) or c.fits
    fitting = [r for r, ok in fits.items() if ok]
    above = [r for r, ok in fits.items() if fitting and r > max(fitting) and not ok]
    return (max(fitting), min(above)) if above else None


def refine_ratio(candidates: list[Candidate]) -> float | None:
    """The ratio halfway (on a 0.05 grid) across the boundary, when it is at least REFINE_GAP wide; else None."""
    edge = boundary(candidates)
    if edge is None:
        return None
    low, high = edge
    middle = round((low + high) / 2 * 20) / 20
    return middle if high - low >= REFINE_GAP - 1e-9 and low < middle < high else None


def per_group_candidate(candidates: list[Candidate]) -> Candidate | None:
    """Where a per-group allocation may help: the first uniform ratio over the floor, allocated by the budget
    search (`--macs-fraction` at that ratio's MACs: the groups that cost the metric least give up more), at the
    runtime and precision that ran that ratio fastest; the grid's boundary (a refining ratio is a probe of what
    the short recovery sees). None without a boundary or a timed candidate on it."""
    edge = boundary(candidates, grid_only=True)
    if edge is None:
        return None
    on_it = [c for c in candidates if c.ratio == edge[1] and c.allocation == "uniform" and c.p50_ms is not None
             and c.mac_reduction]
    if not on_it:
        return None
    fastest = min(on_it, key=lambda c: c.p50_ms)
    return Candidate(edge[1], fastest.target, fastest.precision, allocation="per-group",
                     macs_fraction=math.ceil(1e6 / fastest.mac_reduction) / 1e6)  # up: uniform's own MACs fit


class Search:
    """One search: `score(candidate, full)` compiles a candidate into its out_dir and returns its report (or
    raises a P2DError carrying `.report` when the floor or verification failed)."""

    def __init__(self, options, score, state, progress, driver_for, example_feed: dict | None = None,
                 executor=None):
        """`state`: load() -> dict and update(key, record) of the measured candidates (None: not kept; update
        must be safe from several processes); `example_feed`: the inputs every candidate is timed on;
        `executor` (search/executor.py): where the ratios are scored, each ratio's candidates in one task (they
        share its recovery), this process by default."""
        self.options, self.score, self.state, self.progress = options, score, state, progress
        self.executor = executor or InlineExecutor()
        self.driver_for = driver_for  # target name -> a driver (registry), for runners of candidate artifacts
        self.example_feed = example_feed or {}
        self.metric_name = None
        self.started = time.time()  # wall clock: the same in pool and Ray workers
        self.budget_s = options.search_minutes * 60.0
        self.done = self._load_state()
        self.missed: list[float] = []  # uniform ratios that missed the floor at every runtime and precision
        self.numbers: dict[str, int] = {}  # candidate -> its number in the progress lines
        self.defer = True  # larger uniform ratios than those wait until the refinement is done

    def run(self, pairs: list[tuple[str, str]]) -> tuple[Candidate | None, dict]:
        candidates = [Candidate(r, t, p) for r in RATIOS for t, p in pairs]
        n = len(candidates)
        self.progress.say(f"searching {n} candidates (ratio x runtime x precision) within --max-drop "
                  f"{self.options.max_drop:g}, {self.options.search_minutes:g} min at most")
        self._score_all(candidates, n)
        for _ in range(REFINE):
            ratio = refine_ratio(candidates)
            if ratio is None or time.time() - self.started > SCORE_SHARE * self.budget_s:
                break
            extra = [Candidate(ratio, t, p) for t, p in pairs]
            self.progress.say(f"refining: ratio {ratio:g}, between the largest ratio that fits and the next that "
                              "does not")
            candidates += extra
            self._score_all(extra, n)
        deferred = [c for c in candidates if c.status == "deferred"]
        if deferred:
            self.progress.say(f"scoring the {len(deferred)} deferred candidate(s): ratios above one that missed the floor")
            self.defer = False
            for c in deferred:
                c.status = "pending"
            self._score_all(deferred, n)
        self._time(candidates)
        extra = per_group_candidate(candidates)
        if extra and time.time() - self.started <= SCORE_SHARE * self.budget_s:
            self.progress.say(f"per-group allocation at the MACs of ratio {extra.ratio:g} (the first uniform ratio "
                              f"over the floor), through the budget search")
            candidates.append(extra)
            self._score_all([extra], n)
            if extra.status == "measured":
                self._time(candidates)
        for c in sorted((c for c in candidates if c.p50_ms is not None), key=lambda c: c.p50_ms):
            self.progress.say(f"  {c.name}: {c.p50_ms:.3g} ms, {c.vs_dense_fp32:.2f}x dense ORT FP32, drop {c.drop:.3g}"
                      f"{'' if c.fits else ' (over the floor)'}")
        chosen, why = select(candidates, self.options.max_drop)
        picked, survivors, unrecovered = self._survivors(candidates, chosen), [], []
        for c in picked:
            if time.time() - self.started > self.budget_s:
                unrecovered.append(c.name)
                continue
            self._measure(c, full=True)
            survivors.append(c)
            self.progress.say(f"survivor {c.name}, recovered fully: {self._metric_text(c)}")
        if unrecovered:
            self.progress.say(f"--search-minutes {self.options.search_minutes:g} spent: not recovered fully: "
                              f"{', '.join(unrecovered)}")
        if survivors:
            chosen, why = select(candidates, self.options.max_drop)
        record = {"max_drop": self.options.max_drop, "metric": self.metric_name, "candidates": [c.record() for c in candidates],
                  "chosen": chosen.record() if chosen else None, "why": why, "survivors": [c.name for c in survivors],
                  "survivors_not_recovered": unrecovered,
                  "wall_s": round(time.time() - self.started, 1), "search_minutes": self.options.search_minutes,
                  "score_steps": SCORE_STEPS, "selected_on": "validation data only",
                  "executor": self.executor.description}
        return chosen, record

    def _score_all(self, candidates: list[Candidate], n: int) -> None:
        """Each ratio's candidates in one task of the executor (in order: the first recovers, the others start
        from its checkpoint); results copied back onto `candidates`."""
        groups: dict[str, list] = {}
        for c in candidates:
            number = self.numbers.setdefault(self._key(c, False), len(self.numbers) + 1)  # deferred: keeps its number
            groups.setdefault(c.label, []).append((number, n, c))
        results = self.executor.map(self._score_group, list(groups.values()))
        for group, (measured, metric_name) in zip(groups.values(), results):
            self.metric_name = metric_name or self.metric_name
            for (_, _, c), m in zip(group, measured):
                if m is c:  # scored in this process: _measure saved it
                    continue
                for f in dataclasses.fields(Candidate):  # came back from a worker
                    setattr(c, f.name, getattr(m, f.name))
                if c.status not in ("pending", "deferred") and not c.status.startswith("skipped"):
                    self._save(self._key(c, c.recovery != "short"), c)  # Ray: the worker's own save is remote
                if c.out_dir and c.status == "measured" and not Path(c.out_dir).is_dir():
                    c.status = ("failed: its files are not on this machine (Ray workers need the cache directory on "
                                "a file system this machine shares)")

    def _score_group(self, group: list) -> tuple[list[Candidate], str | None]:
        """One ratio's candidates, in order (a task of the executor: runs here or in a worker)."""
        out = []
        for k, n, c in group:
            missed = [r for r in self.missed if r < c.ratio]
            if time.time() - self.started > SCORE_SHARE * self.budget_s:
                c.status = f"skipped: --search-minutes {self.options.search_minutes:g} spent"
            elif missed and c.allocation == "uniform" and self.defer:
                c.status = "deferred"  # scored after the refinement, if time is left
            else:
                self._measure(c, full=self.options.recover == "none" or c.ratio == 0.0)
                of = f"/{n}" if k <= n else " (added)"
                self.progress.say(f"candidate {k}{of}: ratio {c.name}: {self._metric_text(c)} [{c.wall_s} s]")
            out.append(c)
        measured = [c for c in out if c.drop is not None]
        if measured and len(measured) == len(out) and not any(c.fits for c in measured) \
                and out[0].allocation == "uniform":
            self.missed.append(out[0].ratio)  # larger ratios prune more: deferred (in this process)
        return out, self.metric_name

    def _metric_text(self, c: Candidate) -> str:
        if c.drop is None:
            return c.status
        return f"drop {c.drop:.3g} ({'fits' if c.fits else 'over the floor'}, {c.recovery} recovery)"

    def _survivors(self, candidates: list[Candidate], chosen: Candidate | None) -> list[Candidate]:
        """Faster than the chosen one but over the floor after a short recovery only: they may fit once fully
        recovered. One per ratio (its fastest runtime and precision: a full recovery helps every precision of a
        ratio alike), for the SURVIVORS ratios that came closest to the floor; closest first (the likeliest to fit
        when --search-minutes runs out before the last). Only the grid's ratios (and the per-group candidate)
        qualify: the refining ratios probe the boundary a short recovery sees, and would crowd the survivors
        towards the least pruned (MNIST: 0.1 and 0.15 closest after 200 steps, while 0.5 fits recovered)."""
        if self.options.recover == "none":
            return []
        limit = chosen.p50_ms if chosen else float("inf")
        pool = [c for c in candidates if c.status == "measured" and c.recovery == "short" and not c.fits
                and c.p50_ms is not None and c.p50_ms < limit and (c.ratio in RATIOS or c.allocation != "uniform")]
        closest = {}
        for c in pool:
            closest[c.label] = min(closest.get(c.label, c.drop), c.drop)
        labels = sorted(closest, key=closest.get)[:SURVIVORS]
        picks = [min((c for c in pool if c.label == label), key=lambda c: c.p50_ms) for label in labels]
        return picks  # in the order of `labels`

    @staticmethod
    def _key(c: Candidate, full: bool) -> str:
        return f"{c.label} {c.target} {c.precision}|{'full' if full else 'short'}"  # as requested: known before

    def _measure(self, c: Candidate, full: bool) -> None:
        key = self._key(c, full)
        if key in self.done:  # measured before this search was interrupted
            saved = dict(self.done[key])
            self.metric_name = saved.pop("metric_name", None) or self.metric_name
            for k, v in saved.items():
                setattr(c, k, v)
            if c.out_dir and Path(c.out_dir).is_dir():
                return
        start = time.perf_counter()
        c.recovery = "none" if c.ratio == 0.0 or self.options.recover == "none" else ("full" if full else "short")
        try:
            report = self.score(c, full)
        except P2DError as error:
            report = getattr(error, "candidate_report", None)
            if report is None or "accuracy" not in report:
                c.status, c.fits = f"failed: {str(error).splitlines()[0][:200]}", False
                c.wall_s = round(time.perf_counter() - start, 1)
                self._save(key, c)
                return
        acc = report["accuracy"]
        self.metric_name = acc["metric"]
        c.deployed = report["precision"]["deployed"]
        c.metric = acc.get("pruned_deployed", acc["pruned"])
        c.drop = acc.get("drop_deployed", acc["drop"])
        c.fits = c.drop <= self.options.max_drop + 1e-9 and report["verification"]["passed"]
        c.status = "measured" if report["verification"]["passed"] else \
            "failed: the deployed artifact failed its check against torch FP32"
        c.mac_reduction = report.get("mac_reduction")
        c.recovery_steps = (report.get("recovery") or {}).get("steps") if c.recovery != "none" else 0
        c.wall_s = round(time.perf_counter() - start, 1)
        self._save(key, c)

    def _time(self, candidates: list[Candidate]) -> None:
        """Every measured candidate's deployed pruned artifact, the dense model in ORT FP32 and the dense model at
        each candidate's runtime and precision: one interleaved loop."""
        from prune2deploy.runtime.timing import summarize, time_interleaved

        measured = [c for c in candidates if c.status == "measured" and c.out_dir and Path(c.out_dir).is_dir()]
        if not measured:
            return
        runners, dense_of = {}, {}
        for c in measured:
            runners[c.name] = self._runner(c, "pruned")
            same = f"dense {c.target} {c.deployed}"
            if same not in runners:
                runners[same] = self._runner(c, "dense")
            dense_of[c.name] = same
        base = "dense ort-cpu fp32"
        if base not in runners:
            from prune2deploy.backends.ort_cpu.runner import OrtRunner

            runners[base] = OrtRunner(Path(measured[0].out_dir) / "dense.onnx", self.options.threads)
        feed = self.example_feed
        with self.progress.stage("search_timing", f"timing {len(runners)} artifacts of the search (interleaved)"):
            samples = time_interleaved({n: r.timed_call(feed) for n, r in runners.items()}, warmup=3, min_iters=20,
                                       budget_s=TIMING_SECONDS * len(runners))
        p50 = {n: summarize(s)["p50"] for n, s in samples.items()}
        for c in measured:
            c.p50_ms = p50[c.name]
            c.vs_dense_fp32 = p50[base] / p50[c.name]
            c.vs_dense_same = p50[dense_of[c.name]] / p50[c.name]

    def _runner(self, c: Candidate, name: str):
        from prune2deploy.precision.choose import Precision

        out = Path(c.out_dir)
        driver = self.driver_for(c.target)
        driver.precision = Precision(c.precision, c.deployed, "")
        artifacts = {p.name: p for p in out.iterdir()}
        return driver.shipped_runner(artifacts, name, self.options)

    def _load_state(self) -> dict:
        return self.state.load() if self.state else {}

    def _save(self, key: str, c: Candidate) -> None:
        self.done[key] = {**c.record(), "out_dir": c.out_dir, "metric_name": self.metric_name}
        if self.state:
            self.state.update(key, self.done[key])


def nothing_fits(why: str):
    return user_error(why, "raise --max-drop, give more --search-minutes or recovery (--recover-minutes), "
                           "or a higher --precision")
