"""Graceful degradation: groups that break the model are left unpruned and reported; graphs that are too
costly or cannot be built are pruned block by block; nothing prunable is one line, exit 2."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn

from helpers import assert_user_error
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import UserError
from prune2deploy.model.facts import count_macs_params
from prune2deploy.passes.graph_budget import GraphBudget, GraphTooCostly
from prune2deploy.passes.prune_channels import PruneChannels, layer_widths


def _prune(model, x, **kw):
    ctx = CompileContext(ExampleInputs((x,), {}))
    p = PruneChannels(**{"ratio": 0.5, "round_to": None, **kw})
    ctx.records[p.name] = p.run(model, ctx)
    p.ensure(model, ctx)
    return ctx.records[p.name]


class HardCodedWidth(nn.Module):
    """conv_b's output is reshaped with a literal channel count: torch-pruning cannot know, so pruning
    conv_b's group breaks the forward. conv_a's group is fine."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * 64, 10)

    def forward(self, x):
        x = self.conv_b(torch.relu(self.mid(torch.relu(self.conv_a(x)))))
        return self.head(x.reshape(x.shape[0], 16 * 64))


class OnlyHardCoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16 * 64, 10)

    def forward(self, x):
        return self.head(self.conv(x).reshape(x.shape[0], 16 * 64))


def test_breaking_group_is_skipped_and_the_rest_pruned():
    model, x = HardCodedWidth().eval(), torch.randn(1, 3, 8, 8)
    dense = model(x)
    record = _prune(model, x)
    assert record["pruning_mode"] == "global graph"
    assert [s["group"] for s in record["skipped"]] == ["conv_b"] or \
        {s["group"] for s in record["skipped"]} >= {"mid"}  # the group is named by its root layer
    assert all("no longer runs" in s["reason"] for s in record["skipped"])
    widths = layer_widths(model)
    assert widths["conv_a"]["out"] == 8 and widths["mid"]["in"] == 8  # the healthy group was pruned
    assert widths["conv_b"]["out"] == 16  # the breaking one was restored exactly
    assert model(x).shape == dense.shape


def test_nothing_prunable_is_a_user_error():
    model, x = OnlyHardCoded().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(UserError, match="nothing could be pruned.*conv"):
        _prune(model, x)


@pytest.mark.parametrize("sigint", ["python's handler", "ignored"])
def test_budget_interrupts_busy_python_within_its_time(sigint):
    """Also when SIGINT was ignored, as in a background process (`p2d ... &`, some CI runners)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if sigint == "ignored" else signal.getsignal(signal.SIGINT)
    try:
        start = time.monotonic()
        with pytest.raises(GraphTooCostly, match="took over 0.3 s"):
            with GraphBudget(seconds=0.3, gb=100, what="the test's graph"):
                while time.monotonic() - start < 10:  # bounded: a broken budget fails, it does not hang
                    pass
        assert time.monotonic() - start < 2
        if sigint == "ignored":
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, previous)


def test_budget_stops_memory_growth():
    hog = []
    with pytest.raises(GraphTooCostly, match="grew memory by over 0.2 GB"):
        with GraphBudget(seconds=60, gb=0.2):
            for _ in range(100):  # bounded: 1.6 GB at most; running out is a failure, not a hang
                hog.append(bytearray(16 * 1024**2))
                time.sleep(0.01)
    del hog


def test_budget_lets_quick_work_through():
    with GraphBudget(seconds=5, gb=1) as budget:
        sum(range(1000))
    assert budget.tripped is None


def test_block_local_mode_keeps_block_outputs():
    from models import resnet_like

    model, x = resnet_like().eval(), torch.randn(1, 3, 32, 32)
    macs0 = count_macs_params(model, ExampleInputs((x,), {}))[0]
    before = layer_widths(model)
    record = _prune(model, x, mode="block-local")
    assert record["pruning_mode"] == "block-local" and record["blocks"]
    after = layer_widths(model)
    changed = [n for n in after if after[n] != before[n]]
    assert changed, "block-local pruning pruned nothing"
    assert after["stem.0"] == before["stem.0"]  # not inside a block: the residual stream keeps its width
    assert count_macs_params(model, ExampleInputs((x,), {}))[0] < macs0


class _ResidualMlp(nn.Module):
    def __init__(self, width=32, hidden=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class StallsAsAWhole(nn.Module):
    """Tracing the whole model stalls (as Swin's graph walk does); each block traces quickly on its own."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.blocks = nn.Sequential(_ResidualMlp(), _ResidualMlp())
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        start = time.monotonic()
        while torch.is_grad_enabled() and time.monotonic() - start < 60:
            pass  # spins in Python, as torch-pruning's graph walk does: the budget can interrupt it
        return self.head(self.blocks(self.embed(x)))


def test_costly_whole_graph_falls_back_to_block_local_within_the_budget():
    torch.manual_seed(0)
    model, x = StallsAsAWhole().eval(), torch.randn(2, 16)
    started = time.monotonic()
    record = _prune(model, x, graph_budget_s=1.0)
    assert time.monotonic() - started < 15
    assert record["pruning_mode"] == "block-local"
    assert "took over 1 s" in record["pruning_mode_reason"]
    assert record["blocks"] == ["blocks.0", "blocks.1"]
    widths = layer_widths(model)
    assert widths["blocks.0.fc1"]["out"] == 32 and widths["blocks.1.fc2"]["in"] == 32  # hidden 64 -> 32
    assert widths["blocks.0.fc2"]["out"] == 32 and widths["embed"]["out"] == 32  # residual stream kept


def test_global_mode_refuses_instead_of_falling_back():
    model, x = StallsAsAWhole().eval(), torch.randn(2, 16)
    with pytest.raises(UserError, match="global pruning is not possible: the whole model's dependency graph "
                                        "took over 1 s"):
        _prune(model, x, graph_budget_s=1.0, mode="global")


@pytest.mark.slow
def test_cli_unsupported_model_stops_with_one_line(p2d, tmp_path):
    from helpers import MODELS

    started = time.time()
    r = p2d("compile", f"{MODELS}:busy_when_traced", "--input-shape", "1,3,8,8", "--out", "out",
            "--graph-budget-s", "2", "--no-benchmark")
    assert_user_error(r, "nothing could be pruned", "took over 2 s")
    assert time.time() - started < 60
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("criterion", ["taylor", "hessian"])
def test_block_local_with_gradient_criteria(criterion):
    from models import resnet_like

    torch.manual_seed(0)
    model, x = resnet_like().eval(), torch.randn(2, 3, 32, 32)
    before = layer_widths(model)
    record = _prune(model, x, mode="block-local", criterion=criterion)
    after = layer_widths(model)
    assert record["pruning_mode"] == "block-local"
    assert any(after[n]["out"] < before[n]["out"] for n in after)

