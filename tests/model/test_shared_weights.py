"""What the pruning stage holds: the copy that gets pruned shares the dense weights until it needs its own (and
never writes into them); torch-pruning's traced autograd graph is let go once the groups are pruned."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn as nn

from recovery_digits import digits_tensors, trained_deep_digits_cnn
from prune2deploy import pipeline
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.passes.graph_budget import release_trace
from prune2deploy.passes.prune_channels import PruneChannels
from prune2deploy.model.shared_weights import shared_copy, unshare
from prune2deploy.pipeline import Output


class TiedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight  # tied, as in language models

    def forward(self, x):
        return self.head(self.norm(self.embed(x).mean(1)))


def _bytes(model):
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])  # ties once


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_copy_shares_storage_in_new_tensors_and_keeps_ties():
    dense = TiedEncoder()
    copy = shared_copy(dense)
    for (name, a), b in zip(dense.named_parameters(), copy.parameters()):
        assert a is not b and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr(), name
    assert copy.head.weight is copy.embed.weight
    assert copy.norm.running_mean is not dense.norm.running_mean
    assert copy.norm.running_mean.data_ptr() == dense.norm.running_mean.data_ptr()


def test_unshare_lets_the_copy_be_written_without_touching_the_dense_model():
    dense = TiedEncoder()
    before = _state(dense)
    copy = shared_copy(dense)
    copied = unshare(copy, dense)
    assert copied == _bytes(dense)  # the tied weight once
    assert copy.head.weight is copy.embed.weight
    with torch.no_grad():
        copy.embed.weight.add_(1.0)
    copy.train()(torch.randint(0, 16, (4, 3)))  # BatchNorm running stats move in place
    after = dense.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert unshare(copy, dense) == 0


def test_pruning_the_copy_leaves_the_dense_weights_as_they_were():
    dense = trained_deep_digits_cnn()
    before = _state(dense)
    copy = shared_copy(dense)
    example = ExampleInputs((digits_tensors()[0][:1],), {})
    PruneChannels(0.5, round_to=8).run(copy, CompileContext(example))
    assert sum(p.numel() for p in copy.parameters()) < sum(p.numel() for p in dense.parameters()) / 2
    after = dense.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # what pruning replaced has memory of its own; what it kept is still shared until unshare
    shared = unshare(copy, dense)
    assert 0 < shared < _bytes(dense)


@pytest.mark.slow
def test_compile_with_iterative_recovery_and_taylor_leaves_the_dense_model_intact(tmp_path):
    dense = trained_deep_digits_cnn()
    before = _state(dense)
    tx, ty, vx, vy = digits_tensors()
    data = tmp_path / "digits.pt"
    torch.save({"inputs": torch.cat([tx, vx]), "labels": torch.cat([ty, vy])}, data)
    result = pipeline.compile(dense, tx[:1], out_dir=tmp_path / "out", ratio=0.5,
                              criterion="taylor", iterative_steps=2, data=str(data), epochs=1, skip_benchmark=True,
                                  output=Output(use_cache=False))
    assert result.report["accuracy"]["pruned"] > result.report["accuracy"]["after_prune"]
    after = dense.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in dense.parameters())


class _Token:
    """Lives as long as the autograd node that saved it."""


class _Mark(torch.autograd.Function):
    tokens: list = []

    @staticmethod
    def forward(ctx, x):
        ctx.token = _Token()
        _Mark.tokens.append(weakref.ref(ctx.token))
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Marked(nn.Module):
    def forward(self, x):
        return _Mark.apply(x)


def test_release_trace_frees_the_traced_autograd_graph_without_the_garbage_collector():
    import torch_pruning as tp

    model = nn.Sequential(nn.Linear(4, 8), _Marked(), nn.ReLU(), nn.Linear(8, 2))
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(1, 4))
    token = _Mark.tokens[-1]
    gc.disable()
    try:
        assert token() is not None  # the dependency graph's nodes keep the trace's autograd graph alive
        release_trace(graph)
        assert token() is None
    finally:
        gc.enable()
