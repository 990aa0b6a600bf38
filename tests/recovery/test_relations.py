"""Self-attention relation distillation (--kd-relations) and distillation-input augmentation (--kd-augment)."""
from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from helpers import import_or_skip
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import UserError
from prune2deploy.config.options import CompileOptions
from prune2deploy.passes.prune_channels import PruneChannels
from prune2deploy.recovery import RecoveryConfig, recover
from prune2deploy.recovery.augment import replace_tokens
from prune2deploy.recovery.relations import RelationMatcher, attention_blocks, relation_kl


def _tiny_bert():
    transformers = import_or_skip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                                     intermediate_size=128, max_position_embeddings=32,
                                     initializer_range=0.2)  # sharper attention than 0.02: relations that differ
    return transformers.BertModel(config).eval()


def _token_batch(seed=0, batch=4, tokens=12):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    mask[: batch // 2, tokens - 4:] = 0  # padding
    ids = torch.randint(5, 60, (batch, tokens), generator=g) * mask
    return ExampleInputs((), {"input_ids": ids, "attention_mask": mask})


def test_relation_kl_on_known_values_ignores_padding_and_head_counts():
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    assert relation_kl(x, x, 2).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_kl(x, 3 * x, 2).item() > 0.01
    # one head, two tokens: student relation uniform, teacher softmax([1, 0]) on each row -> KL by hand
    s, t = torch.zeros(1, 2, 1), torch.tensor([[[1.0], [0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    row0 = float((p * (p.log() - math.log(0.5))).sum())  # query 0: logits [1, 0]; query 1: [0, 0] -> KL 0
    assert relation_kl(s, t, 1).item() == pytest.approx(row0 / 2, rel=1e-5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    y = x.clone()
    y[0, 3:] = 100.0  # differs only on padded tokens
    assert relation_kl(x, y, 2, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_kl(x, y, 2).item() > 0.01


def test_relations_pull_a_head_pruned_student_towards_the_teacher():
    teacher = _tiny_bert()
    student = copy.deepcopy(teacher)
    inputs = _token_batch()
    PruneChannels(0.5, mode="global").run(student, CompileContext(inputs))
    assert [layer.attention.self.num_attention_heads for layer in student.encoder.layer] == [4, 4]
    assert attention_blocks(student) == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    matcher = RelationMatcher(student, teacher, heads=4)
    with matcher.capture():
        inputs.call(teacher), inputs.call(student)
    before = matcher.loss(inputs.kwargs["attention_mask"])
    assert before.item() > 0 and not matcher.student_feats  # read once, then cleared
    with pytest.raises(UserError, match="not a multiple of 3"):
        RelationMatcher(student, teacher, heads=3)
    batches = [(_token_batch(seed), None) for seed in range(4)]
    after = {}
    for heads in (0, 4):  # the same 32 steps without and with the relation term
        trained = copy.deepcopy(student)
        steps = itertools.count()  # a metric that rises each validation: the last weights are kept
        recover(trained, teacher, batches, batches, lambda m, b: next(steps),
                RecoveryConfig(epochs=8, lr=3e-3, relations=heads, features=["none"], patience=99), baseline=-1.0)
        probe = RelationMatcher(trained, teacher, heads=4)
        with probe.capture(), torch.no_grad():
            inputs.call(teacher), inputs.call(trained)
        after[heads] = probe.loss(inputs.kwargs["attention_mask"]).item()
    assert after[4] < 0.8 * before.item() and after[4] < 0.8 * after[0]  # measured: 0.84 -> 0.58; without: 0.94


def test_relations_refuse_models_without_bert_attention():
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(UserError, match="BERT-style encoder"):
        RelationMatcher(lin, copy.deepcopy(lin), heads=2)


def test_token_replacement_keeps_special_tokens_padding_and_is_seeded():
    inputs = _token_batch(tokens=40, batch=8)
    ids, mask = inputs.kwargs["input_ids"], inputs.kwargs["attention_mask"].bool()
    out = replace_tokens(inputs, 0.3, torch.Generator().manual_seed(1))
    new = out.kwargs["input_ids"]
    assert torch.equal(out.kwargs["attention_mask"], inputs.kwargs["attention_mask"]) and new is not ids
    lengths = mask.sum(1)
    rows = torch.arange(len(ids))
    assert torch.equal(new[:, 0], ids[:, 0]) and torch.equal(new[rows, lengths - 1], ids[rows, lengths - 1])
    assert torch.equal(new[~mask], ids[~mask])
    changed = (new != ids).float().sum() / (mask.sum() - 2 * len(ids))
    assert 0.15 < changed.item() < 0.35  # about the fraction (some draws pick the same token)
    assert set(new[mask].tolist()) <= set(ids[mask].tolist())  # replacements come from the batch
    again = replace_tokens(inputs, 0.3, torch.Generator().manual_seed(1)).kwargs["input_ids"]
    assert torch.equal(again, new)
    assert torch.equal(replace_tokens(inputs, 0.0, torch.Generator()).kwargs["input_ids"], ids)


def test_augmented_recovery_needs_token_inputs_and_runs_on_them():
    teacher = _tiny_bert()
    student = copy.deepcopy(teacher)
    batches = [(_token_batch(seed), None) for seed in range(2)]
    record = recover(student, teacher, batches, batches, lambda m, b: 0.0, RecoveryConfig(epochs=1, augment=0.2),
                     baseline=-1.0)
    assert record["steps"] == 2
    images = [(ExampleInputs((torch.randn(2, 4),), {}), None)]
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(UserError, match="--kd-augment needs token inputs"):
        recover(lin, copy.deepcopy(lin), images, images, lambda m, b: 0.0, RecoveryConfig(augment=0.1), baseline=-1.0)


@pytest.mark.parametrize("field,value,message", [("kd_relations", -1, "kd-relations -1"),
                                                 ("kd_augment", 1.0, "kd-augment 1.0 is outside")])
def test_bad_settings_are_user_errors(field, value, message):
    with pytest.raises(UserError, match=message):
        CompileOptions(**{field: value}).validate()
