"""--metric: top1, cosine to the dense model, user callables; report `accuracy` from a real learnable task (digits)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from digits import digits, trained_digits_cnn
from helpers import MODELS, assert_user_error
from prune2deploy.context import ExampleInputs
from prune2deploy.errors import UserError
from prune2deploy.data.metrics import drop, resolve_metric


class Fixed(nn.Module):
    """Returns the logits stored for each batch index (carried in the input's first element)."""

    def __init__(self, logits: list[torch.Tensor]):
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.logits[int(x[0, 0])]


def batch(i: int, n: int, labels=None):
    return ExampleInputs((torch.full((n, 1), float(i)),), {}), labels


def test_top1_on_known_logits():
    logits = [torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]), torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])]
    val = [batch(0, 2, torch.tensor([0, 2])), batch(1, 2, torch.tensor([2, 0]))]
    metric = resolve_metric(None, Fixed(logits), val)
    assert (metric.name, metric.unit, metric.higher_is_better) == ("top1", "%", True)
    assert metric(Fixed(logits), val) == 75.0  # 3 of 4 argmaxes match
    assert drop(75.0, 60.0) == 15.0 == metric.drop(75.0, 60.0)  # percentage points


def test_cosine_to_dense_is_cached_and_exact():
    dense_logits = [torch.tensor([[1.0, 0.0], [1.0, 1.0]])]
    dense = Fixed(dense_logits)
    val = [batch(0, 2)]  # no labels: cosine
    metric = resolve_metric(None, dense, val)
    assert (metric.name, metric.unit) == ("cosine", "")
    assert metric(dense, val) == pytest.approx(1.0)
    other = Fixed([torch.tensor([[0.0, 1.0], [-1.0, -1.0]])])
    assert metric(other, val) == pytest.approx((0.0 - 1.0) / 2)  # orthogonal, opposite
    calls = dense.calls
    metric(other, val)
    assert dense.calls == calls  # the dense outputs were computed once for these batches
    assert metric.drop(1.0, 0.9) == pytest.approx(0.1)


def test_cosine_pools_token_outputs_over_the_attention_mask():
    class Tokens(nn.Module):
        def __init__(self, noise_on_padding: float):
            super().__init__()
            self.noise = noise_on_padding

        def forward(self, input_ids, attention_mask):
            out = torch.stack([torch.ones(2, 3) * (i + 1) for i in range(input_ids.shape[0])]).clone()
            out[attention_mask == 0] = self.noise
            return (out,)

    ids = torch.zeros(2, 2, dtype=torch.int64)
    mask = torch.tensor([[1, 1], [1, 0]])
    val = [(ExampleInputs((), {"input_ids": ids, "attention_mask": mask}), None)]
    metric = resolve_metric("cosine", Tokens(0.0), val)
    assert metric(Tokens(-50.0), val) == pytest.approx(1.0)  # padded positions do not count


def test_explicit_metric_errors_and_callables(tmp_path):
    logits = [torch.tensor([[2.0, 1.0]])]
    unlabelled = [batch(0, 1)]
    with pytest.raises(UserError, match="--metric top1 needs labels"):
        resolve_metric("top1", Fixed(logits), unlabelled)
    with pytest.raises(UserError, match="unknown metric 'auc'"):
        resolve_metric("auc", Fixed(logits), unlabelled)
    with pytest.raises(UserError, match="needs validation data"):
        resolve_metric(None, Fixed(logits), [])
    (tmp_path / "m.py").write_text(
        "def mean_logit(model, batches):\n"
        "    return sum(float(model(*b.args).mean()) for b, _ in batches) / len(batches)\n"
        "def broken(model, batches):\n    raise KeyError('no scores')\n"
        "def words(model, batches):\n    return 'good'\n")
    mean_logit = resolve_metric(f"{tmp_path / 'm.py'}:mean_logit", Fixed(logits), unlabelled)
    assert (mean_logit.name, mean_logit.unit) == ("mean_logit", "")
    assert mean_logit(Fixed(logits), unlabelled) == 1.5
    with pytest.raises(UserError, match="--metric broken raised KeyError"):
        resolve_metric(f"{tmp_path / 'm.py'}:broken", Fixed(logits), unlabelled)(Fixed(logits), unlabelled)
    with pytest.raises(UserError, match="returned 'good', not a number"):
        resolve_metric(f"{tmp_path / 'm.py'}:words", Fixed(logits), unlabelled)(Fixed(logits), unlabelled)


def test_metric_keeps_the_models_training_mode():
    model = trained_digits_cnn().train()
    x, y = digits()
    val = [(ExampleInputs((x[:64],), {}), y[:64])]
    value = resolve_metric(None, model, val)(model, val)
    assert model.training and 0 <= value <= 100


@pytest.mark.slow
def test_accuracy_in_report_on_digits(tmp_path):
    """Real learnable task: the dense model is far above chance; pruning 70% loses accuracy; gates read it."""
    from prune2deploy.config.values import parse_gate
    from prune2deploy.pipeline import Output, compile

    x, y = digits()
    torch.save((x, y), tmp_path / "digits.pt")
    result = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), out_dir=tmp_path / "out", ratio=0.7,
                     data=str(tmp_path / "digits.pt"), val_split=0.2, skip_benchmark=True,
                     recover="none",  # the accuracy stage alone; recovery has its own tests
                     gates=[parse_gate("accuracy.drop<=100"), parse_gate("accuracy.dense>=80")],
                         output=Output(use_cache=False))
    acc = result.report["accuracy"]
    assert acc["metric"] == "top1" and acc["samples"] == 359 and acc["data"]["train_samples"] == 1438
    assert acc["dense"] >= 80  # about 90%: a real model on real digits
    assert acc["after_prune"] == acc["pruned"] and acc["after_prune"] < acc["dense"] - 5
    assert acc["drop"] == pytest.approx(acc["dense"] - acc["pruned"])
    assert result.report["gates"]["passed"] is True
    held_out = torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:359]  # the seeded split, by hand
    with torch.no_grad():
        by_hand = 100.0 * float((trained_digits_cnn()(x[held_out]).argmax(1) == y[held_out]).float().mean())
    assert acc["dense"] == pytest.approx(by_hand)
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())["accuracy"]
    assert on_disk["dense"] == acc["dense"] and math.isfinite(on_disk["drop"])
    assert "## Accuracy: top1" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_cli_accuracy_gate_and_bad_data(p2d, tmp_path):
    """Through the CLI: a missed accuracy gate exits 3; bad data exits 2 with one line and writes nothing."""
    x, y = digits()
    model = trained_digits_cnn()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save({"inputs": x, "labels": y}, tmp_path / "digits.pt")
    common = [f"{MODELS}:digits_cnn", "--weights", "w.pt", "--input-shape", "1,1,8,8", "--no-benchmark",
              "--ratio", "0.7", "--recover", "none"]
    run = p2d("compile", *common, "--data", "digits.pt", "--out", "ok", "--gate", "accuracy.drop<=0.01")
    assert run.code == 3, run.stderr
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["accuracy"]["drop"] > 0.01 and "accuracy (top1 on 180 validation samples)" in run.stdout
    torch.save({"inputs": x, "labels": y + 3}, tmp_path / "bad.pt")
    run = p2d("compile", *common, "--data", "bad.pt", "--out", "bad")
    assert_user_error(run, "--data bad.pt: labels range 3..12 but the model's output has 10 classes")
    assert not (tmp_path / "bad").exists()
    run = p2d("compile", *common, "--val-data", "digits.pt", "--metric", "cosine", "--out", "cos", "--no-cache")
    assert run.code == 0, run.stderr
    acc = json.loads((tmp_path / "cos" / "report.json").read_text())["accuracy"]
    assert acc["metric"] == "cosine" and acc["dense"] == pytest.approx(1.0) and acc["samples"] == 1797
