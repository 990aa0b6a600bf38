"""Score a candidate allocation: prune a copy of the dense model to its widths, re-estimate BatchNorm on a few
training batches, measure --metric on a small validation subset (higher is better).

Without data the score is fidelity: mean cosine of the candidate's first output to the dense model's on seeded
random inputs, labelled as such (`fidelity to dense, random inputs`): it ranks layers, it is not accuracy.
"""
from __future__ import annotations

from ..inputs import random_like
from ..metrics import CosineToDense, Metric
from ..recovery.bn_recalibration import recalibrate_bn
from .groups import Group
from .prune_to import pruned_copy

SCORE_VAL_BATCHES = 4  # validation batches per candidate score (of --batch-size samples each)
BN_BATCHES = 4  # training batches for BatchNorm re-estimation per candidate
RANDOM_SETS = 8  # random input sets for the fidelity score without data
FIDELITY = "fidelity to dense, random inputs (cosine)"


class Scorer:
    """scorer(widths) -> metric of the model pruned to `widths`; picklable state only (for process pools)."""

    def __init__(self, model, inputs, groups: list[Group], options, metric: Metric | None = None,
                 train: list | None = None, val: list | None = None):
        self.model, self.inputs, self.groups, self.options = model, inputs, groups, options
        self.train = list(train or [])[:BN_BATCHES]
        if metric is not None and val:
            self.metric, self.val, self.label = metric, list(val)[:SCORE_VAL_BATCHES], metric.name
        else:
            self.metric = Metric("fidelity", "", CosineToDense(model))
            self.val = [(random_like(inputs, seed=options.seed + 500 + i), None) for i in range(RANDOM_SETS)]
            self.label = FIDELITY
        self.samples = sum(next(iter(b.tensors())).shape[0] for b, _ in self.val)

    def dense(self) -> float:
        return self.metric(self.model, self.val)

    def __call__(self, widths: dict[str, int]) -> float:
        pruned = pruned_copy(self.model, self.inputs, self.groups, widths, self.options)
        recalibrate_bn(pruned, self.train)
        return self.metric(pruned, self.val)

    def describe(self) -> dict:
        return {"metric": self.label, "validation_samples": self.samples, "bn_batches": len(self.train)}
