"""Score a candidate allocation (higher is better): prune a copy of the dense model to its widths, re-estimate
BatchNorm on a few training batches, then either measure --metric on a small validation subset, or (`kd_steps` > 0,
with data) distil it from the dense model for that many steps (the recovery loop and loss of prune2deploy/recovery
on the first training batches) and score minus the same distillation loss on the validation subset. The same
batches for every candidate, so candidates are compared on equal terms.

BN re-estimation alone ranks what a width costs before any training; a few dozen distillation steps rank what
recovery can repair (a thin layer that BN statistics cannot fix but training can, and the reverse), which is
what the final metric after recovery depends on. The loss, not top-1 on a few hundred samples, because top-1 there
moves by sampling noise (±1 point) more than candidates differ.

`--score-steps auto` (the default) picks the steps per model: SCORE_STEPS, fewer when one candidate's steps would
take over STEP_BUDGET_S (a step timed on the dense model), and none when fewer than MIN_STEPS fit: a transformer
step on one CPU core takes seconds, and a search scores hundreds of candidates.

Without data the score is fidelity: mean cosine of the candidate's first output to the dense model's on seeded
random inputs, labelled as such (`fidelity to dense, random inputs`): it ranks layers, it is not accuracy.
"""
from __future__ import annotations

from time import perf_counter

from prune2deploy.model.inputs import random_like
from prune2deploy.data.metrics import CosineToDense, Metric
from prune2deploy.recovery.bn_recalibration import recalibrate_bn
from prune2deploy.recovery.distill import DistillLoss
from prune2deploy.recovery.trainer import RecoveryConfig, recover, validation_loss
from prune2deploy.search.groups import Group
from prune2deploy.search.prune_to import pruned_copy

SCORE_VAL_BATCHES = 4  # validation batches per candidate score (of --batch-size samples each)
BN_BATCHES = 4  # training batches for BatchNorm re-estimation per candidate
RANDOM_SETS = 8  # random input sets for the fidelity score without data
FIDELITY = "fidelity to dense, random inputs (cosine)"
SCORE_STEPS = 20  # --score-steps auto: at most this many distillation steps per candidate
STEP_BUDGET_S = 5.0  # auto: one candidate's distillation steps may take this long
MIN_STEPS = 5  # auto: fewer steps than this are not worth their time (BN re-estimation and --metric only)
PROBE_STEPS = (2, 6)  # auto: the dense model scored after this many steps, to time one step


class Scorer:
    """scorer(widths) -> metric of the model pruned to `widths`; picklable state only (for process pools).

    `kd_steps` > 0 (and training data): that many distillation steps from the dense model before the metric."""

    auto_steps: dict | None = None  # how --score-steps auto chose kd_steps (Scorer.auto)

    def __init__(self, model, inputs, groups: list[Group], options, metric: Metric | None = None,
                 train: list | None = None, val: list | None = None, kd_steps: int = 0):
        self.model, self.inputs, self.groups, self.options = model, inputs, groups, options
        train = list(train or [])
        self.train = train[:BN_BATCHES]
        self.kd_batches = train[:kd_steps] if metric is not None and val else []
        if metric is not None and val:
            self.metric, self.val, self.label = metric, list(val)[:SCORE_VAL_BATCHES], metric.name
        else:
            self.metric = Metric("fidelity", "", CosineToDense(model))
            self.val = [(random_like(inputs, seed=options.seed + 500 + i), None) for i in range(RANDOM_SETS)]
            self.label = FIDELITY
        self.samples = sum(next(iter(b.tensors())).shape[0] for b, _ in self.val)
        self.objective = DistillLoss("kd", options.kd_alpha, options.kd_temperature)
        self.config = RecoveryConfig(method="kd", lr=options.lr, epochs=1, max_steps=len(self.kd_batches),
                                     kd_alpha=options.kd_alpha, kd_temperature=options.kd_temperature,
                                     features=["none"], warmup_fraction=0.1, patience=1, seed=options.seed)

    def dense(self) -> float:
        return self.metric(self.model, self.val)

    def metric_of(self, widths: dict[str, int]) -> float:
        """--metric of the model pruned to `widths` after BN re-estimation only (the report's final_score)."""
        pruned = pruned_copy(self.model, self.inputs, self.groups, widths, self.options)
        recalibrate_bn(pruned, self.train)
        return self.metric(pruned, self.val)

    def __call__(self, widths: dict[str, int]) -> float:
        pruned = pruned_copy(self.model, self.inputs, self.groups, widths, self.options)
        recalibrate_bn(pruned, self.train)
        if not self.kd_batches:
            return self.metric(pruned, self.val)
        # one short recovery epoch over the first kd_steps batches (weights after it kept: baseline -inf), then
        # minus the distillation loss on the validation batches: continuous, so a few hundred samples rank
        # candidates whose top-1 differs by less than its sampling noise
        recover(pruned, self.model, self.kd_batches, self.val, self.metric, self.config, float("-inf"))
        return -validation_loss(pruned, self.model, self.val, self.objective)

    @classmethod
    def auto(cls, model, inputs, groups: list[Group], options, metric=None, train=None, val=None) -> "Scorer":
        """A Scorer with --score-steps auto: the step count this model affords (recorded in describe()).

        A step's time: the dense model scored after PROBE_STEPS[1] and after PROBE_STEPS[0] steps, the difference
        divided by the extra steps (what a scoring costs besides its steps cancels), after one warm-up scoring."""
        short, long = (cls(model, inputs, groups, options, metric, train, val, kd_steps=k) for k in PROBE_STEPS)
        if len(long.kd_batches) <= len(short.kd_batches):  # no data (fidelity: nothing to distil), or too little
            return cls(model, inputs, groups, options, metric, train, val, kd_steps=len(long.kd_batches))
        dense, seconds = {g.name: g.width for g in groups}, []
        short(dense)  # warm-up: what only the first scoring pays (lazy initialisation) is not a step
        for scorer in (short, long):
            started = perf_counter()
            scorer(dense)
            seconds.append(perf_counter() - started)
        step_s = max(seconds[1] - seconds[0], 1e-6) / (len(long.kd_batches) - len(short.kd_batches))
        fit = int(STEP_BUDGET_S / step_s)
        chosen = cls(model, inputs, groups, options, metric, train, val,
                     kd_steps=min(SCORE_STEPS, fit) if fit >= MIN_STEPS else 0)
        chosen.auto_steps = {"step_s": float(f"{step_s:.3g}"), "budget_s": STEP_BUDGET_S, "fit": fit,
                             "chosen": len(chosen.kd_batches)}
        return chosen

    def describe(self) -> dict:
        score = f"minus the distillation loss after {len(self.kd_batches)} steps" if self.kd_batches else self.label
        return {"metric": self.label, "score": score, "validation_samples": self.samples,
                "bn_batches": len(self.train), "kd_steps": len(self.kd_batches),
                "score_steps_auto": self.auto_steps}
