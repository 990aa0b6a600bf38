"""Recovery as a library: KD loss values, BN re-estimation, recovery on real digits, resume, feature matching."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from recovery_digits import batches, digits_tensors, top1, trained_deep_digits_cnn
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import UserError
from prune2deploy.passes.prune_channels import PruneChannels
from prune2deploy.recovery import (
    Checkpoints, DistillLoss, FeatureMatcher, RecoveryConfig, kd_loss, output_loss, rebuild, recalibrate_bn,
    recover, structure, warmup_cosine
)


# ---- losses on known values ----------------------------------------------------------------------------------

def test_kd_loss_matches_hand_computed_kl():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    # T=1: p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln 1.5 + 1/4 ln 0.5
    expected_t1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected_t1, rel=1e-5)
    # T=2: p_t = (sqrt3, 1) / (sqrt3 + 1), times T^2
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-5)
    # with labels: alpha * KL + (1 - alpha) * CE; CE of uniform logits is ln 2
    mixed = kd_loss(student, teacher, torch.tensor([1]), alpha=0.7, temperature=1.0).item()
    assert mixed == pytest.approx(0.7 * expected_t1 + 0.3 * math.log(2), rel=1e-5)
    assert kd_loss(teacher, teacher, temperature=3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_output_losses_on_known_vectors():
    x = torch.tensor([[1.0, 0.0]])
    assert output_loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert output_loss(x, torch.tensor([[0.0, 2.0]])).item() == pytest.approx(1.0)
    assert output_loss(x, -x).item() == pytest.approx(2.0)
    assert output_loss(x, torch.tensor([[3.0, 0.0]]), "mse").item() == pytest.approx(2.0)  # (4 + 0) / 2
    tokens_s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (batch, tokens, hidden); token 2 is padding
    tokens_t = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert output_loss(tokens_s, tokens_t).item() == pytest.approx(1.0)  # (0 + 2) / 2
    assert output_loss(tokens_s, tokens_t, mask=torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UserError):
        output_loss(x, x, "l7")


def test_distill_loss_picks_kd_for_classifiers_and_cosine_for_embeddings():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    loss = DistillLoss("kd", alpha=0.7, temperature=1.0)
    assert loss(s, t, None).item() == pytest.approx(kd_loss(s, t, temperature=1.0).item())
    emb_s, emb_t = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])  # (batch, tokens, hidden)
    assert loss({"last_hidden_state": emb_s}, {"last_hidden_state": emb_t}, None).item() == pytest.approx(1.0)
    assert DistillLoss("finetune")(s, t, torch.tensor([0])).item() == pytest.approx(math.log(2))
    with pytest.raises(UserError, match="finetune needs labels"):
        DistillLoss("finetune")(s, t, None)


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)


# ---- on real data: scikit-learn's digits -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    tx, ty, vx, vy = digits_tensors()
    return trained_deep_digits_cnn(), batches(tx, ty), batches(vx, vy), ExampleInputs((tx[:1],), {})


def _pruned(dense, example, ratio=0.5, steps=1, ignore=()):
    model = copy.deepcopy(dense)
    PruneChannels(ratio, round_to=8, iterative_steps=steps, ignore=ignore).run(model, CompileContext(example))
    return model.eval()


def test_bn_reestimation_changes_running_stats_and_improves_accuracy(digits):
    dense, train, val, example = digits
    pruned = _pruned(dense, example)
    before = {n: b.clone() for n, b in pruned.named_buffers() if "running_" in n}
    accuracy_after_prune = top1(pruned, val)
    assert recalibrate_bn(pruned, train) == 3
    after = dict(pruned.named_buffers())
    assert all(not torch.allclose(before[n], after[n]) for n in before)
    assert not pruned.training and all(not m.training for m in pruned.modules())
    assert top1(pruned, val) > accuracy_after_prune + 10  # measured: 27.6% -> 61.8%
    assert recalibrate_bn(torch.nn.Linear(2, 2), train) == 0


def test_recovery_on_digits_beats_after_prune_by_a_real_margin(digits):
    dense, train, val, example = digits
    pruned = _pruned(dense, example)
    after_prune = top1(pruned, val)
    recalibrate_bn(pruned, train)
    after_bn = top1(pruned, val)
    record = recover(pruned, dense, train, val, top1, RecoveryConfig(epochs=3, lr=1e-3), baseline=after_bn)
    recovered = top1(pruned, val)
    assert recovered == pytest.approx(record["metric_after"])
    assert recovered >= after_bn and recovered > after_prune + 40  # measured: 27.6% -> 97.8% (dense 99.8%)
    assert [c["epoch"] for c in record["curve"]] == [1, 2, 3] and record["steps"] == 3 * len(train)
    assert record["world_size"] == 1 and record["resumed_from"] is None


def test_budget_and_early_stop_limit_the_steps(digits):
    dense, train, val, example = digits
    pruned = _pruned(dense, example)
    record = recover(pruned, dense, train, val, top1, RecoveryConfig(epochs=5, max_steps=7), baseline=0.0)
    assert record["steps"] == 7 and record["epochs"] == 1
    never_better = recover(copy.deepcopy(pruned), dense, train, val, lambda m, b: 0.0,
                           RecoveryConfig(epochs=10, patience=2), baseline=0.0)
    assert never_better["epochs"] == 2  # two epochs without a better metric: stop


def test_recovery_is_deterministic_and_resumes_exactly(digits, tmp_path):
    dense, train, val, example = digits
    config = RecoveryConfig(epochs=3, lr=1e-3)
    full = _pruned(dense, example)
    recover(full, dense, train, val, top1, config, baseline=0.0)

    calls = {"n": 0}

    def dies_in_epoch_2(model, batch_list):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed after the first epoch's checkpoint
        return top1(model, batch_list)

    interrupted = _pruned(dense, example)
    with pytest.raises(KeyboardInterrupt):
        recover(interrupted, dense, train, val, dies_in_epoch_2, config, baseline=0.0,
                checkpoints=Checkpoints(tmp_path))
    fresh_dense = copy.deepcopy(dense)  # resume rebuilds the pruned structure from the checkpoint
    record = recover(fresh_dense, dense, train, val, top1, config, baseline=0.0,
                     checkpoints=Checkpoints(tmp_path, resume=True))
    assert record["resumed_from"] == {"stage": 0, "epoch": 1, "step": len(train)}
    assert structure(fresh_dense)["shapes"] == structure(full)["shapes"]
    for (name, a), b in zip(full.state_dict().items(), fresh_dense.state_dict().values()):
        assert torch.equal(a, b), name
    again = recover(copy.deepcopy(dense), dense, train, val, top1, config, baseline=0.0,
                    checkpoints=Checkpoints(tmp_path, resume=True))  # finished: nothing to train
    assert again["resumed_from"]["done"] and again["steps"] == record["steps"]


def test_rebuild_restores_widths_and_attributes(digits):
    dense, _, _, example = digits
    pruned = _pruned(dense, example, ratio=0.7)
    copy_of_dense = rebuild(copy.deepcopy(dense), structure(pruned))
    copy_of_dense.load_state_dict(pruned.state_dict())
    assert copy_of_dense.features[0].out_channels == pruned.features[0].out_channels < 32
    x = example.args[0]
    assert torch.allclose(copy_of_dense(x), pruned(x))


def test_feature_matching_on_kept_layers(digits):
    dense, train, val, example = digits
    pruned = _pruned(dense, example)
    matcher = FeatureMatcher(pruned, dense, ["fc"])  # produces the output: pruning keeps its width
    with matcher.capture():
        pruned(example.args[0]), dense(example.args[0])
    assert matcher.loss().item() > 0
    record = recover(pruned, dense, train[:6], val, top1, RecoveryConfig(epochs=1, features=["fc"]),
                     baseline=0.0)
    assert record["steps"] == 6
    with pytest.raises(UserError, match="changed its output shape"):
        bad = FeatureMatcher(pruned, dense, ["features.0"])
        with bad.capture():
            pruned(example.args[0]), dense(example.args[0])
        bad.loss()
    with pytest.raises(UserError, match="no layer of that name"):
        FeatureMatcher(pruned, dense, ["nope"])


def test_eval_every_validates_within_epochs_and_resumes_there(digits, tmp_path):
    dense, train, val, example = digits
    config = RecoveryConfig(epochs=2, lr=1e-3, eval_every=5, patience=100)
    full = _pruned(dense, example)
    record = recover(full, dense, train, val, top1, config, baseline=0.0)
    n = len(train)  # 22 batches: validations at 5, 10, 15, 20, the epoch's end, 25, ...
    expected = sorted({s for s in range(5, 2 * n + 1, 5)} | {n, 2 * n})
    assert [p["step"] for p in record["curve"]] == expected and record["epochs"] == 2
    assert record["curve"][0]["epoch"] == round(5 / n, 3) and record["curve"][expected.index(n)]["epoch"] == 1

    calls = {"n": 0}

    def dies_at_the_third_validation(model, batch_list):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the checkpoint of step 10 (mid-epoch) was written
        return top1(model, batch_list)

    with pytest.raises(KeyboardInterrupt):
        recover(_pruned(dense, example), dense, train, val, dies_at_the_third_validation, config, baseline=0.0,
                checkpoints=Checkpoints(tmp_path))
    resumed = copy.deepcopy(dense)
    again = recover(resumed, dense, train, val, top1, config, baseline=0.0,
                    checkpoints=Checkpoints(tmp_path, resume=True))
    assert again["resumed_from"] == {"stage": 0, "epoch": 0, "step": 10}
    assert [p["step"] for p in again["curve"]] == expected
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class TokenEncoder(torch.nn.Module):
    """Token ids -> [batch, tokens, 64] features (no classifier head), three transformer layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 64)
        layer = torch.nn.TransformerEncoderLayer(64, 8, 128, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask):
        return self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)


def test_encoders_match_every_kept_block_by_default_classifiers_none():
    from prune2deploy.recovery.distill import matched_blocks
    from models import transformer_like

    teacher = TokenEncoder().eval()
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 12, dtype=torch.int64)
    mask[:2, 8:] = 0
    inputs = ExampleInputs((), {"input_ids": ids, "attention_mask": mask})
    with pytest.raises(UserError, match="removing attention heads changed the model's output shapes"):
        PruneChannels(0.5, round_to=8).run(copy.deepcopy(teacher), CompileContext(inputs))  # output = head width
    narrowed = copy.deepcopy(teacher)  # a narrower residual stream: no block matches
    narrowed.embed = torch.nn.Embedding(50, 32)
    narrowed.encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), 3, enable_nested_tensor=False)
    assert "encoder.layers.0" not in matched_blocks(narrowed.eval(), teacher, inputs, [])
    student = copy.deepcopy(teacher)  # FFN hidden 128 -> 64 in every layer: the residual stream keeps its width
    for layer in student.encoder.layers:
        layer.linear1 = torch.nn.Linear(64, 64)
        layer.linear2 = torch.nn.Linear(64, 64)
    blocks = [f"encoder.layers.{i}" for i in range(3)]
    assert matched_blocks(student, teacher, inputs, []) == blocks
    assert matched_blocks(student, teacher, inputs, ["none"]) == []
    assert matched_blocks(student, teacher, inputs, ["embed"]) == ["embed"]
    classifier = transformer_like()
    tokens = ExampleInputs((torch.randint(0, 100, (2, 16)),), {})
    assert matched_blocks(copy.deepcopy(classifier), classifier, tokens, []) == []

    batches_ = [(inputs, None)] * 3
    record = recover(student, teacher, batches_, batches_, lambda m, b: 0.0, RecoveryConfig(epochs=1), baseline=-1.0)
    assert record["kd_features"] == blocks and record["steps"] == 3


def test_token_features_are_matched_per_token_without_padding():
    teacher = TokenEncoder().eval()
    student = copy.deepcopy(teacher)
    names = ["encoder.layers.2"]
    matcher = FeatureMatcher(student, teacher, names)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    matcher.student_feats[names[0]] = torch.ones(2, 6, 4)
    matcher.teacher_feats[names[0]] = torch.ones(2, 6, 4)
    matcher.teacher_feats[names[0]][0, 4:] = -1.0  # differs on padding only
    assert matcher.loss(mask).item() == pytest.approx(0.0, abs=1e-6)  # cosine per real token
    matcher.student_feats[names[0]] = torch.ones(2, 6, 4)
    matcher.teacher_feats[names[0]] = torch.ones(2, 6, 4)
    matcher.teacher_feats[names[0]][0, 4:] = -1.0
    assert matcher.loss(None).item() == pytest.approx(4 * 2 * 4 / (2 * 6 * 4))  # no mask: MSE on every element


def test_a_time_budget_replans_warmup_and_decay_into_the_steps_it_allows():
    from prune2deploy.recovery.trainer import Schedule

    plan = Schedule(total=1000, warmup_fraction=0.05)
    assert plan(10) == pytest.approx(11 / 50)  # planned over 1000 steps: still warming up at step 10
    plan.replan(step=5, planned=1000, seconds_per_step=2.0, seconds_left=90.0)  # 45 more steps fit
    assert plan.total == 50 and plan(10) > 0.9 and plan(49) < 0.01  # decays to ~0 where the budget ends
    plan.replan(step=5, planned=1000, seconds_per_step=0.001, seconds_left=90.0)
    assert plan.total == 1000  # never beyond the epochs asked for
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plan.replan(step=0, planned=1000, seconds_per_step=1.0, seconds_left=20.0)
    state = torch.optim.lr_scheduler.LambdaLR(optimizer, plan).state_dict()
    restored = Schedule(total=1000, warmup_fraction=0.05)
    torch.optim.lr_scheduler.LambdaLR(optimizer, restored).load_state_dict(state)
    assert restored.total == 20  # the plan travels in the checkpoint


def test_recovery_under_a_time_budget_ends_with_a_decayed_lr(digits, monkeypatch):
    import types

    from prune2deploy.recovery import trainer

    ticks = {"n": 0}

    def clock():  # a step costs one reading of the clock: 0.5 s, whatever the machine's load
        ticks["n"] += 1
        return 0.5 * ticks["n"]

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=clock))
    dense, train, val, example = digits
    pruned = _pruned(dense, example)
    record = recover(pruned, dense, train, val, top1, RecoveryConfig(epochs=50, minutes=0.5, lr=1e-3),
                     baseline=0.0)
    assert 20 < record["steps"] < 60  # the 30 s budget, not 50 epochs of 22 steps
    assert record["curve"][-1]["lr"] < 0.05e-3  # warm-up and decay fitted into those steps, not stopped at the peak
