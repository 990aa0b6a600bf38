"""Budget pass (--target-speedup, --latency-ms, --macs-fraction): per-group widths that meet the budget.

run -> ensure, in place of the uniform pruning pass (same record, plus `budget`): enumerate the groups, measure
their cost table on the target (cached), allocate widths greedily scoring candidates on validation data, then
measure the pruned model itself; while it misses the budget, tighten the table's target by what the
measurement says and continue the greedy steps from there; then widen groups into what is left under the budget
(coarse widths overshoot it), kept when the model measured at those widths still meets it. The model is pruned to the final widths by the
pruning pass (round_to, rollback, attention fix-ups), whose `ensure` checks it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..errors import user_error
from ..measure import count_macs_params
from ..search.allocator import Unreachable, allocate, refill
from ..search.executor import make_executor
from ..search.groups import prunable_groups
from ..search.latency_table import OrtTimer, cached_table, default_grid, device_name, measure_table, table_key
from ..search.prune_to import pass_for, pruned_copy
from ..search.scoring import Scorer

KINDS = {"target_speedup": "speedup", "latency_ms": "latency_ms", "macs_fraction": "macs_fraction"}
TOLERANCE = 0.02  # measured latency may miss the requested fraction by this much (timing noise) and count as met
CHECK_SECONDS = 4.0  # timing of each allocation against dense (the table's rows get 2 s per group)
MAX_ROUNDS = 5  # allocation rounds (the first plus corrections from measurements)


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
        scorer = Scorer(model, inputs, groups, opts, self.data.metric, self.data.train, self.data.val,
                        kd_steps=opts.score_steps)
        executor = make_executor(opts.workers, opts.ray_address)
        rounds, widths, steps, scored, uniform = [], None, [], 0, None
        fraction_target = None
        for _ in range(MAX_ROUNDS):
            dense_now = rounds[-1]["dense"] if rounds else table.dense
            requested = self.budget.fraction(dense_now)
            fraction_target = requested if fraction_target is None else fraction_target
            try:
                result = allocate(groups, table, lambda c: executor.map(scorer, c), fraction_target * table.dense,
                                  opts.budget_step, start=widths, on_step=self._on_step)
            except Unreachable as exc:
                self._unreachable(self._measure(model, inputs, groups, exc.widths, check))
            widths, scored = result.widths, scored + result.candidates_scored
            uniform = result.uniform or uniform
            steps += [{**s, "step": len(steps) + i + 1, "round": len(rounds) + 1} for i, s in enumerate(result.steps)]
            measured = self._measure(model, inputs, groups, widths, check)
            requested = self.budget.fraction(measured["dense"])
            rounds.append({"table_target_fraction": fraction_target, "requested_fraction": requested,
                           **measured})
            if measured["fraction"] <= requested * (1 + (TOLERANCE if timer else 0.0)):  # MACs are exact
                break
            if all(widths[g.name] <= g.min_width for g in groups):
                self._unreachable(measured)
            # the table's sum missed what the model measures: aim its estimate lower by the same factor
            fraction_target = result.estimated_cost / table.dense * requested / measured["fraction"]
        else:
            self._unreachable(measured, f"after {MAX_ROUNDS} rounds of allocation")
        widths, refilled = self._refill(model, inputs, groups, table, executor, scorer, widths, result, rounds, check)
        scored += refilled["candidates_scored"]
        scores = {"dense_score": scorer.dense(), "final_score": scorer.metric_of(widths),  # before `model` is pruned
                  "final_search_score": scorer(widths)}
        self._final = pass_for(groups, widths, opts)
        record = self._final.run(model, ctx)
        record["budget"] = {
            "kind": self.budget.kind, "requested": self.budget.requested, "achieved": None, "met": None,
            "search_measured": rounds[-1], "steps": steps,
            "per_group": [{"name": g.name, "kind": g.kind, "dense": g.width, "kept": widths[g.name],
                           "kept_fraction": widths[g.name] / g.width} for g in groups],
            "search": {"wall_s": round(time.perf_counter() - started, 3), "candidates_scored": scored,
                       "candidates_timed": (0 if hit else table.candidates_timed) + len(rounds) * bool(timer),
                       "table_cached": hit, "table_s": table_s, "table_key": key, "rounds": rounds, "executor": executor.description,
                       "slice": opts.budget_step, "uniform_compared": uniform, "refill": refilled, **scorer.describe(), **scores},
            "table": table.to_dict(),
        }
        return record

    def ensure(self, model: nn.Module, ctx) -> None:
        self._final.ensure(model, ctx)

    def _refill(self, model, inputs, groups, table, executor, scorer, widths, result, rounds, check):
        """Widen groups into what the allocation left under the budget (the table's estimate scaled by what the
        last measurement said about it); kept only when the model measured at the new widths still meets it."""
        last = rounds[-1]
        scale = last["fraction"] / (result.estimated_cost / table.dense)
        target = last["requested_fraction"] * table.dense
        counted = []

        def score_many(candidates):
            counted.extend(candidates)
            return executor.map(scorer, candidates)
        wider, widened = refill(groups, table, score_many, target, widths, scale=scale)
        record = {"widened": widened, "candidates_scored": len(counted), "kept": False}
        if widened:
            measured = self._measure(model, inputs, groups, wider, check)
            record["measured"] = measured
            if measured["fraction"] <= last["requested_fraction"]:
                record["kept"] = True
                rounds.append({"table_target_fraction": target / table.dense, "refill": True,
                               "requested_fraction": self.budget.fraction(measured["dense"]), **measured})
                return wider, record
        return widths, record

    def _measure(self, model, inputs, groups, widths, timer) -> dict:
        """The pruned/dense cost of the model at `widths`, measured (timed interleaved, or MACs counted)."""
        pruned = pruned_copy(model, inputs, groups, widths, self.options)
        if timer:
            p50 = timer({"dense": model, "pruned": pruned})
            return {"dense": p50["dense"], "pruned": p50["pruned"], "fraction": p50["pruned"] / p50["dense"],
                    "unit": "ms", "kind": self.budget.kind}
        dense, small = count_macs_params(model, inputs)[0], count_macs_params(pruned, inputs)[0]
        return {"dense": dense, "pruned": small, "fraction": small / dense, "unit": "MACs", "kind": self.budget.kind}

    def _unreachable(self, measured: dict, when: str = "with every group at its narrowest useful width"):
        raise user_error(f"the budget ({self.budget.describe()}) is unreachable: the best reached is "
                         f"{_reached(measured)} {when}", "ask for less, or --ignore fewer layers")

    def _on_step(self, step: dict) -> None:
        self._say(f"step {step['step']}: {step['group']} {step['from']} -> {step['to']} "
                  f"(score {step['score']:.4g}, {step['proposals']} proposals)")

    def _say(self, text: str) -> None:
        if self.progress is not None and self.progress.enabled:
            self.progress.stream.write(f"\n    {text}")
            self.progress.stream.flush()


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
