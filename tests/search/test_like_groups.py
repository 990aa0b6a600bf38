"""Cheaper latency tables and better candidate scores: like groups share one measured latency row; candidates are
scored after a few distillation steps on real data (scikit-learn's digits). The allocator's refill and uniform
comparison are tested on test_budget.py's synthetic table."""
from __future__ import annotations

import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.data.metrics import Metric, top1
from prune2deploy.config.options import CompileOptions
from prune2deploy.search.groups import prunable_groups
from prune2deploy.search.latency_table import CostTable, measure_table
from prune2deploy.search.like_groups import representatives
from prune2deploy.recovery.bn_recalibration import recalibrate_bn
from prune2deploy.recovery.trainer import validation_loss
from prune2deploy.search.prune_to import pruned_copy
from prune2deploy.search.scoring import Scorer
from recovery_digits import batches, digits_tensors, trained_deep_digits_cnn


class _Block(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, hidden), nn.Linear(hidden, 16)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class _Stack(nn.Module):
    """stem, two identical blocks and a wider third one, head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(8, 16)
        self.blocks = nn.Sequential(_Block(), _Block(), _Block(48))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class _CountingTimer:
    description = "counting timer"

    def __init__(self):
        self.timed = []

    def __call__(self, models):
        self.timed.append(sorted(models))
        return {name: 1.0 + sum(p.numel() for p in m.parameters()) / 1e3 for name, m in models.items()}


def test_like_blocks_share_one_measured_row():
    model, inputs = _Stack().eval(), ExampleInputs((torch.randn(2, 8),), {})
    groups = prunable_groups(model, inputs, round_to=8)
    names = [g.name for g in groups]
    assert {"blocks.0.fc1", "blocks.1.fc1", "blocks.2.fc1"} <= set(names)
    same = representatives(model, inputs, groups)
    assert same["blocks.1.fc1"] == "blocks.0.fc1"  # identical block, identical input shapes
    assert same["blocks.2.fc1"] == "blocks.2.fc1"  # a wider hidden layer is another configuration
    assert all(same[n] == n for n in names if not n.startswith("blocks."))  # not inside a numbered block
    timer = _CountingTimer()
    table = measure_table(model, inputs, groups, CompileOptions(round_to=8), timer)
    assert len(timer.timed) == len(groups) - 1  # one timing loop fewer: blocks.1.fc1 was not timed
    assert table.shared == {"blocks.1.fc1": "blocks.0.fc1"}
    assert table.saved["blocks.1.fc1"] == table.saved["blocks.0.fc1"] and table.saved["blocks.0.fc1"]
    assert CostTable.from_dict(table.to_dict()).shared == table.shared


def test_candidates_scored_after_distillation_steps_rank_what_recovery_repairs():
    tx, ty, vx, vy = digits_tensors()
    dense, train, val = trained_deep_digits_cnn(), batches(tx, ty), batches(vx, vy)
    inputs = ExampleInputs((tx[:1],), {})
    options = CompileOptions(round_to=8, lr=1e-3).validate()
    groups = prunable_groups(dense, inputs, round_to=8)
    metric = Metric("top1", "%", top1)
    thin = {g.name: g.min_width for g in groups}
    bn_only = Scorer(dense, inputs, groups, options, metric, train, val)
    distilled = Scorer(dense, inputs, groups, options, metric, train, val, kd_steps=15)
    assert bn_only.describe()["kd_steps"] == 0 and distilled.describe()["kd_steps"] == 15
    assert distilled.describe()["score"] == "minus the distillation loss after 15 steps"
    thin, wide = {g.name: g.min_width for g in groups}, {g.name: g.width // 2 for g in groups}
    assert bn_only(wide) > bn_only(thin) + 20  # top-1 after BN re-estimation
    assert distilled(wide) > distilled(thin) + 0.2  # minus the validation distillation loss after 15 steps
    assert distilled(thin) == distilled(thin)  # the same batches and seed for every candidate: reproducible
    untrained = pruned_copy(dense, inputs, groups, thin, options)  # the same loss before the 15 steps
    recalibrate_bn(untrained, distilled.train)
    assert distilled(thin) > -validation_loss(untrained, dense, distilled.val, distilled.objective) + 0.1


def test_score_steps_auto_fits_the_steps_to_the_time_they_take(monkeypatch):
    """--score-steps auto: 20 steps when they are cheap, fewer when a step is slow, none when fewer than 5 fit;
    a step is timed on the dense model (here the clock or the time budget is mocked)."""
    import prune2deploy.search.scoring as scoring

    tx, ty, vx, vy = digits_tensors()
    dense, train, val = trained_deep_digits_cnn(), batches(tx, ty), batches(vx, vy)
    inputs = ExampleInputs((tx[:1],), {})
    options = CompileOptions(round_to=8).validate()
    groups = prunable_groups(dense, inputs, round_to=8)
    args = (dense, inputs, groups, options, Metric("top1", "%", top1), train, val)
    monkeypatch.setattr(scoring, "STEP_BUDGET_S", 1e3)
    cheap = Scorer.auto(*args)
    step_s = cheap.auto_steps["step_s"]
    assert cheap.describe()["kd_steps"] == min(20, len(train)) and step_s > 0
    clock = iter([0.0, 1.0, 5.0, 7.6])  # after 2 steps 1.0 s, after 6 steps 2.6 s: 0.4 s a step, 7 fit in 3 s
    monkeypatch.setattr(scoring, "STEP_BUDGET_S", 3.0)
    monkeypatch.setattr(scoring, "perf_counter", lambda: next(clock))
    assert Scorer.auto(*args).auto_steps == {"step_s": 0.4, "budget_s": 3.0, "fit": 7, "chosen": 7}
    monkeypatch.undo()
    monkeypatch.setattr(scoring, "STEP_BUDGET_S", 1e-9)
    slow = Scorer.auto(*args)
    assert slow.describe()["kd_steps"] == 0 and slow.describe()["score_steps_auto"]["chosen"] == 0
    no_data = Scorer.auto(*args[:4])  # fidelity on random inputs: nothing to distil, nothing timed
    assert no_data.describe()["metric"].startswith("fidelity")
    assert no_data.describe()["kd_steps"] == 0 and no_data.auto_steps is None
