"""NetAdapt's final step (Yang et al., 2018, who pick the final model among the last proposals after longer
fine-tuning): when the greedy path and uniform widths both measured an allocation that meets the budget (at least
the requested speedup or reduction; per family the one closest to the aim within ACCEPTED_HIGH of the request,
else the slowest one faster than that), the two are pruned from the dense model and given the compile's own
recovery (BN re-estimation, then the recovery pass's method, LR, schedule and length; at most TIE_BREAK_MAX_STEPS
steps unless --tie-break-steps says otherwise) on the training split, and the one with the higher --metric on the
validation split is kept. Test data is never used.

Only allocations measured at or above the budget compete: a slower one wins on accuracy because it is slower (an
MNIST run that let 0.95-1.0 compete kept the greedy widths measured at 0.948, whose final benchmark then read 0.90
of the request, and lost to uniform pruning at the same latency). A faster one may: it wins only by being more
accurate although faster. Widths move in steps of round_to and onnxruntime's kernels make latency a staircase of
them, so a family can jump over the 1.00-1.10 range: on the MNIST CNN at 3x (batch 64, 16-channel steps, every
one of its 64 allocations timed) uniform-like widths measure 0.93 or 1.15 and nothing between, while the
allocations within 0.95-1.10 thin the middle or last layer to 16 channels and recover to 95.8% top-1 at best,
against 96.1% for the 1.15 one (benchmarks/results/budget_landscape_mnist.md).

Only the widths are kept: the exported model is recovered from the pruned dense weights by the recovery pass like
any other compile (the tie-break's trained weights are dropped), so the kept allocation gets exactly the training a
uniform `--ratio` compile gets.

Why: candidate scores (a few dozen distillation steps) rank allocations by what a short recovery repairs; after the
full recovery the ranking can reverse (MNIST CNN at 3x: thinning the middle layer scored best after 20 steps and
then lost 1.3 points of test top-1 to uniform widths at the same measured latency after 300).
"""
from __future__ import annotations

import dataclasses
import math
import time

from prune2deploy.recovery.bn_recalibration import recalibrate_bn
from prune2deploy.recovery.trainer import RecoveryConfig, recover
from prune2deploy.search.prune_to import pruned_copy

TIE_BREAK_MAX_STEPS = 1000  # --tie-break-steps auto: the recovery's own length, at most this many steps
ACCEPTED_HIGH = 1.10  # a family's contender is within 1.00-1.10 of the request when it measured one there


def eligible(q: float, band) -> bool:
    """Whether an allocation measured at q (achieved / requested) meets the budget and competes."""
    return q >= band.low


def contender(landing, band):
    """A family's allocation in the tie-break, among its measurements that meet the budget: its chosen one when
    that is within ACCEPTED_HIGH, else the one closest to the aim within it, else the slowest one (the family
    jumped over the range; None: no measurement meets the budget)."""
    meets = [p for p in landing.points if eligible(p.q, band)]
    near = [p for p in meets if p.q <= ACCEPTED_HIGH]
    if landing.chosen in near:
        return landing.chosen
    if near:
        return min(near, key=lambda p: abs(math.log(p.q / band.aim)))
    return min(meets, key=lambda p: p.q) if meets else None


def tie_break_config(options, method: str, train_batches: int) -> tuple[RecoveryConfig | None, str]:
    """(the recovery settings of the tie-break, why) or (None, why not): the recovery pass's settings with its
    length capped (auto) or set (--tie-break-steps N); none without a recovery to predict, or with N = 0."""
    if method == "none":
        return None, "no recovery (no --data, or --recover none): nothing to break the tie on"
    if options.tie_break_steps == 0:
        return None, "--tie-break-steps 0"
    planned = options.epochs * train_batches
    if options.max_steps:
        planned = min(planned, options.max_steps)
    steps = options.tie_break_steps or min(planned, TIE_BREAK_MAX_STEPS)
    config = RecoveryConfig(method=method, lr=options.lr, epochs=max(options.epochs, -(-steps // train_batches)),
                            max_steps=steps, kd_alpha=options.kd_alpha, kd_temperature=options.kd_temperature,
                            features=list(options.kd_features), eval_every=options.eval_every, seed=options.seed)
    same = steps == planned and not options.recover_minutes
    return config, ("the recovery's own settings" if same else f"the recovery's settings, {steps} steps")


class TieBreak:
    """tie_break({family: widths}) -> (the family kept, the record for report.json's budget.tie_break)."""

    def __init__(self, model, inputs, groups, options, data, config: RecoveryConfig, why: str):
        self.model, self.inputs, self.groups, self.options, self.data = model, inputs, groups, options, data
        self.config, self.why = config, why

    def recovered(self, widths: dict[str, int]) -> dict:
        """--metric on the validation split of the model pruned to `widths`, after BN re-estimation and recovery."""
        started = time.perf_counter()
        pruned = pruned_copy(self.model, self.inputs, self.groups, widths, self.options)
        recalibrate_bn(pruned, self.data.train)
        before = self.data.metric(pruned, self.data.val)
        record = recover(pruned, self.model, self.data.train, self.data.val, self.data.metric, self.config, before)
        return {"widths": dict(widths), "val_after_bn": before, "val_metric": record["metric_after"],
                "steps": record["steps"], "wall_s": round(time.perf_counter() - started, 3)}

    def __call__(self, candidates: dict[str, dict[str, int]]) -> tuple[str, dict]:
        results = {family: self.recovered(widths) for family, widths in candidates.items()}
        kept = max(results, key=lambda f: results[f]["val_metric"])  # ties: the first given (the greedy one)
        return kept, {"kept": kept, "metric": self.data.metric.name, "split": "validation", "settings": self.why,
                      "recovery": {k: v for k, v in dataclasses.asdict(self.config).items() if k != "seed"},
                      **results}


def skipped(why: str) -> dict:
    """budget.tie_break when no tie-break ran."""
    return {"kept": None, "skipped": why}
