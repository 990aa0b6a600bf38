"""Budget pass (--target-speedup, --latency-ms, --macs-fraction): per-group widths that meet the budget.

run -> ensure, in place of the uniform pruning pass (same record, plus `budget`): enumerate the groups, measure
their cost table on the target (cached), then land: greedy steps scored on validation data aim the table at a
target, the pruned model itself is measured, and the target moves by a secant on the measurements until the
model lands in the band (search/landing.py: the table ranks, measurements decide how far). Uniform widths at the
same table estimate are scored too; when they score higher, or the greedy path does not land, uniform widths are
landed the same way and the better of the two is kept. With a recovery to come (--data), uniform widths are
always landed too, and when both meet the budget the one better on the validation split after the compile's own
recovery is kept (search/tie_break.py: NetAdapt's final step); when only one family measured an allocation at or
above the request, that one. A budget is refused only when the narrowest
allocation measured misses it. The model is pruned to the final widths by the pruning pass (round_to, rollback,
attention fix-ups), whose `ensure` checks it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from prune2deploy.errors import user_error
from prune2deploy.model.facts import count_macs_params
from prune2deploy.search.allocator import uniform_widths
from prune2deploy.search.executor import make_executor
from prune2deploy.search.groups import prunable_groups
from prune2deploy.search.landing import (
    EXACT_BAND, TIMED_BAND, Band, GreedyPath, closest, land, refine, uniform_family, widths_key
)
from prune2deploy.search.latency_table import (
    OrtTimer, cached_table, default_grid, device_name, measure_table, table_key
)
from prune2deploy.search.prune_to import pass_for, pruned_copy
from prune2deploy.search.scoring import Scorer
from prune2deploy.search.tie_break import TieBreak, contender, skipped, tie_break_config
from prune2deploy.recovery.recover_pass import recovery_method

KINDS = {"target_speedup": "speedup", "latency_ms": "latency_ms", "macs_fraction": "macs_fraction"}
CHECK_SECONDS = 4.0  # timing of each allocation against dense (the table's rows get 2 s per group)


@dataclass
class Budget:
    kind: str  # speedup | latency_ms | macs_fraction
    requested: float

    @classmethod
    def from_options(cls, options) -> "Budget | None":
        given = [(KINDS[f], getattr(options, f)) for f in KINDS if getattr(options, f) is not None]
        return cls(*given[0]) if given else None

    def fraction(self, dense_cost: float) -> float:
        """The pruned/dense cost ratio this budget asks for."""
        if self.kind == "speedup":
            return 1.0 / self.requested
        if self.kind == "latency_ms":
            return self.requested / dense_cost
        return self.requested

    def describe(self) -> str:
        return {"speedup": f"speedup {self.requested:g}x", "latency_ms": f"p50 latency {self.requested:g} ms",
                "macs_fraction": f"MACs fraction {self.requested:g}"}[self.kind]


class BudgetPrune:
    name = "prune_channels"  # it stands in for the uniform pruning pass: the report reads the same record

    def __init__(self, budget: Budget, options, data, cache_dir: Path | None, progress=None):
        self.budget, self.options, self.data, self.cache_dir = budget, options, data, cache_dir
        self.progress = progress
        self.on_step = None  # the pipeline's recovery hook (only called between iterative steps: none here)
        self._final = None
        self._tie_break_off = ""  # why no tie-break runs (set by _tie_break)

    def run(self, model: nn.Module, ctx) -> dict:
        started = time.perf_counter()
        opts, inputs = self.options, ctx.example_inputs
        groups = prunable_groups(model, inputs, opts.ignore, opts.round_to)
        if not groups:
            raise user_error("no prunable group to allocate a budget over",
                             "run `p2d inspect MODEL` to see the groups; drop --ignore, or use --ratio")
        timer = None if self.budget.kind == "macs_fraction" else OrtTimer(inputs, opts)
        check = OrtTimer(inputs, opts, CHECK_SECONDS) if timer else None
        key = table_key(model, inputs, groups, default_grid(groups), opts, device_name()) if timer else None
        self._say(f"measuring the {'latency' if timer else 'MACs'} table of {len(groups)} groups")
        table_started = time.perf_counter()
        table, hit = cached_table(self.cache_dir if timer else None, key,
                                  lambda: measure_table(model, inputs, groups, opts, timer))
        table_s = round(time.perf_counter() - table_started, 3)
        scorer_args = (model, inputs, groups, opts, self.data.metric, self.data.train, self.data.val)
        scorer = Scorer.auto(*scorer_args) if opts.score_steps is None else \
            Scorer(*scorer_args, kd_steps=opts.score_steps)
        executor = make_executor(opts.workers, opts.ray_address)
        score_many = _memoised(lambda candidates: executor.map(scorer, candidates))
        band = Band(*(TIMED_BAND if timer else EXACT_BAND))
        rounds = []

        def measure(widths):
            measured = self._measure(model, inputs, groups, widths, check)
            q = self.budget.fraction(measured["dense"]) / measured["fraction"]  # achieved / requested
            rounds.append({"family": family, "achieved_over_requested": q, **measured})
            self._say(f"measured {family} allocation: {q:.3f} of the budget")
            return q, measured

        family, path = "greedy", GreedyPath(groups, table, score_many, opts.budget_step, self._on_step)
        requested = self.budget.fraction(table.dense)
        landing = land(path.to, measure, band, requested / band.aim, requested)
        if not landing.in_band:
            refine(landing, groups, score_many, measure, band)
        uniform = self._compare_uniform(groups, table, score_many, landing.chosen.widths)
        tie_break = self._tie_break(model, inputs, groups)
        tie = skipped(self._tie_break_off)  # replaced below when a tie-break can run
        if tie_break or not landing.in_band or uniform["score"] > score_many([landing.chosen.widths])[0]:
            # the greedy steps did not land, uniform widths score higher, or a tie-break will recover both: land
            # uniform widths by measurement too
            family, greedy = "uniform", landing
            landing = land(uniform_family(groups), measure, band, (requested / band.aim) ** 0.5, requested)
            if not landing.in_band:
                refine(landing, groups, score_many, measure, band)
            uniform["landed"] = {"in_band": landing.in_band, "achieved_over_requested": landing.chosen.q}
            picks = {"greedy": contender(greedy, band), "uniform": contender(landing, band)}
            if tie_break and all(picks.values()) and widths_key(picks["greedy"].widths) != widths_key(
                    picks["uniform"].widths):
                self._say(f"tie-break: greedy and uniform widths both meet the budget; recovering each "
                          f"({tie_break.config.max_steps} steps, {tie_break.why})")
                kept, tie = tie_break({name: point.widths for name, point in picks.items()})
                self._say(f"tie-break: {tie['metric']} on validation {tie['greedy']['val_metric']:.4g} greedy, "
                          f"{tie['uniform']['val_metric']:.4g} uniform: {kept} kept")
                for name, point in picks.items():
                    tie[name]["achieved_over_requested"] = point.q
                landing, uniform["chosen"] = _kept(kept, picks[kept], greedy, landing, band)
            elif tie_break and any(picks.values()):  # one allocation meets the budget (or both, the same widths)
                kept = "greedy" if picks["greedy"] else "uniform"
                landing, uniform["chosen"] = _kept(kept, picks[kept], greedy, landing, band)
                tie = skipped(f"only the {kept} widths measured at or above the request" if not all(picks.values())
                              else "greedy and uniform widths are the same")
            else:
                landing, uniform["chosen"] = _better(greedy, landing, score_many, band)
                tie = skipped("neither family measured an allocation at or above the request" if tie_break
                              else self._tie_break_off)
        if landing.chosen.q < band.floor:  # both families measured their narrowest allocation: none comes close
            self._unreachable(max(rounds, key=lambda r: r["achieved_over_requested"]))
        widths = landing.chosen.widths
        steps = path.steps_to(landing)
        scores = {"dense_score": scorer.dense(), "final_score": scorer.metric_of(widths),  # before `model` is pruned
                  "final_search_score": score_many([widths])[0]}
        self._final = pass_for(groups, widths, opts)
        record = self._final.run(model, ctx)
        record["budget"] = {
            "kind": self.budget.kind, "requested": self.budget.requested, "achieved": None, "met": None,
            "search_measured": landing.chosen.measured, "steps": steps,
            "per_group": [{"name": g.name, "kind": g.kind, "dense": g.width, "kept": widths[g.name],
                           "kept_fraction": widths[g.name] / g.width} for g in groups],
            "search": {"wall_s": round(time.perf_counter() - started, 3), "candidates_scored": score_many.count,
                       "candidates_timed": (0 if hit else table.candidates_timed) + len(rounds) * bool(timer),
                       "table_cached": hit, "table_s": table_s, "table_key": key, "rounds": rounds,
                       "landed_in_band": landing.in_band, "band": [band.low, band.high],
                       "refined": landing.refined,
                       "executor": executor.description, "slice": opts.budget_step, "uniform_compared": uniform,
                       **scorer.describe(), **scores},
            "table": table.to_dict(),
            "tie_break": tie,
        }
        return record

    def ensure(self, model: nn.Module, ctx) -> None:
        self._final.ensure(model, ctx)

    def _tie_break(self, model, inputs, groups) -> TieBreak | None:
        """The final tie-break between greedy and uniform widths (search/tie_break.py), or None (why: _tie_break_off)."""
        method = recovery_method(self.options, self.data)
        config, why = tie_break_config(self.options, method, len(self.data.train or []))
        self._tie_break_off = why
        return TieBreak(model, inputs, groups, self.options, self.data, config, why) if config else None

    def _compare_uniform(self, groups, table, score_many, widths) -> dict:
        """Uniform widths at the same table estimate as `widths`, scored by the same scorer."""
        found = uniform_widths(groups, table, table.estimate(widths))
        greedy_score = score_many([widths])[0]
        if found is None:
            return {"kept_fraction": None, "score": float("-inf"), "greedy_score": greedy_score, "chosen": False}
        fraction, uniform = found
        return {"kept_fraction": fraction, "score": score_many([uniform])[0], "greedy_score": greedy_score,
                "chosen": False, "estimated_cost": table.estimate(uniform)}

    def _measure(self, model, inputs, groups, widths, timer) -> dict:
        """The pruned/dense cost of the model at `widths`, measured (timed interleaved, or MACs counted)."""
        pruned = pruned_copy(model, inputs, groups, widths, self.options)
        if timer:
            p50 = timer({"dense": model, "pruned": pruned})
            return {"dense": p50["dense"], "pruned": p50["pruned"], "fraction": p50["pruned"] / p50["dense"],
                    "unit": "ms", "kind": self.budget.kind}
        dense, small = count_macs_params(model, inputs)[0], count_macs_params(pruned, inputs)[0]
        return {"dense": dense, "pruned": small, "fraction": small / dense, "unit": "MACs", "kind": self.budget.kind}

    def _unreachable(self, measured: dict):
        raise user_error(f"the budget ({self.budget.describe()}) is unreachable: the best reached is "
                         f"{_reached(measured)} with every group at its narrowest useful width",
                         "ask for less, or --ignore fewer layers")

    def _on_step(self, step: dict) -> None:
        self._say(f"step {step['step']}: {step['group']} {step['from']} -> {step['to']} "
                  f"(score {step['score']:.4g}, {step['proposals']} proposals)")

    def _say(self, text: str) -> None:
        if self.progress is not None and self.progress.enabled:
            self.progress.stream.write(f"\n    {text}")
            self.progress.stream.flush()


def _memoised(score_many):
    """score_many with each allocation scored once (branches of the greedy path revisit allocations)."""
    scores: dict[tuple, float] = {}

    def scored(candidates: list) -> list:
        todo = list({widths_key(c): c for c in candidates if widths_key(c) not in scores}.values())
        scores.update(zip(map(widths_key, todo), score_many(todo) if todo else []))
        scored.count = len(scores)
        return [scores[widths_key(c)] for c in candidates]
    scored.count = 0
    return scored


def _kept(family: str, point, greedy, uniform, band):
    """(the landing of `family` with `point` chosen, whether it is the uniform one)."""
    landing = uniform if family == "uniform" else greedy
    landing.chosen, landing.in_band = point, band.holds(point.q)
    return landing, family == "uniform"


def _better(greedy, uniform, score_many, band):
    """(the landing kept, whether it is the uniform one): one in the band before one outside it, then the higher
    score; neither in the band: the measurement closer to the request."""
    if greedy.in_band != uniform.in_band:
        return (uniform, True) if uniform.in_band else (greedy, False)
    if not greedy.in_band:
        best = closest([greedy.chosen, uniform.chosen], band)
        return (uniform, True) if best is uniform.chosen else (greedy, False)
    g, u = score_many([greedy.chosen.widths, uniform.chosen.widths])
    return (uniform, True) if u > g else (greedy, False)


def _reached(measured: dict) -> str:
    if measured["unit"] == "MACs":
        return f"a MACs fraction of {measured['fraction']:.3f} ({1 / measured['fraction']:.2f}x fewer MACs)"
    return f"{1 / measured['fraction']:.2f}x speedup (p50 {measured['pruned']:.3g} ms vs {measured['dense']:.3g} ms dense)"


def budget_pass(options, data, cache_dir, progress=None) -> BudgetPrune | None:
    """The budget pass when the options set a budget, else None (uniform pruning)."""
    budget = Budget.from_options(options)
    return BudgetPrune(budget, options, data, cache_dir, progress) if budget else None


def refuse_ratio_with_budget(options, ratio_flags: set) -> None:
    """A budget decides every group's width: --ratio or --head-ratio given with it is a user error."""
    budget = Budget.from_options(options)
    if budget and ratio_flags:
        flags = " and ".join(f"--{f.replace('_', '-')}" for f in sorted(ratio_flags))
        raise user_error(f"{flags} and a budget ({budget.describe()}) both set the widths",
                         "keep the budget (widths are searched per group) or the ratio (the same for every layer)")
