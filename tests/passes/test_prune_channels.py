"""The channel-pruning pass: real width reductions, alignment, kept outputs, criteria."""
from __future__ import annotations

import pytest
import torch

from models import mobilenet_like, resnet_like
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import UserError
from prune2deploy.model.facts import count_macs_params
from prune2deploy.passes.prune_channels import CRITERIA, PruneChannels, layer_widths


def _prune(model, x, **kw):
    ctx = CompileContext(ExampleInputs((x,), {}))
    p = PruneChannels(**kw)
    ctx.records[p.name] = p.run(model, ctx)
    p.ensure(model, ctx)
    return ctx.records[p.name]


def test_resnet_widths_halved_and_aligned():
    model, x = resnet_like(), torch.randn(1, 3, 32, 32)
    before = layer_widths(model)
    macs0, params0 = count_macs_params(model, ExampleInputs((x,), {}))
    record = _prune(model, x, ratio=0.5, round_to=8)
    after = layer_widths(model)
    assert after["stem.0"]["out"] == before["stem.0"]["out"] // 2
    assert after["layers.6.conv1"]["out"] == 64  # 128 -> 64
    for name, w in after.items():
        if w["out"] != before[name]["out"]:
            assert w["out"] % 8 == 0, name
    assert after["fc"]["out"] == 10  # the classifier's outputs are kept
    assert record["kept_for_outputs"] == ["fc"]
    macs1, params1 = count_macs_params(model, ExampleInputs((x,), {}))
    assert macs1 < 0.35 * macs0 and params1 < 0.35 * params0
    assert model(x).shape == (1, 10)


def test_mobilenet_depthwise_and_se_stay_consistent():
    model, x = mobilenet_like(), torch.randn(1, 3, 32, 32)
    before = layer_widths(model)
    _prune(model, x, ratio=0.5, round_to=4)
    after = layer_widths(model)
    dw = "blocks.0.block.3"  # depthwise conv: groups == channels after pruning
    conv = dict(model.named_modules())[dw]
    assert conv.groups == conv.in_channels == conv.out_channels < before[dw]["out"]
    grouped = dict(model.named_modules())["blocks.4"]  # groups=4 conv keeps a multiple of its groups
    assert grouped.out_channels % grouped.groups == 0 and grouped.out_channels < 64
    assert after["blocks.0.block.6.fc1"]["in"] == after["blocks.0.block.0"]["out"]  # SE follows its block
    assert model(x).shape == (1, 10)


def test_ignore_keeps_a_layer_at_full_width():
    model, x = resnet_like(), torch.randn(1, 3, 32, 32)
    _prune(model, x, ratio=0.5, ignore=["layers.2.conv1"])
    assert dict(model.named_modules())["layers.2.conv1"].out_channels == 32


def test_ignore_unknown_layer_is_user_error():
    with pytest.raises(UserError, match="no layer of that name") as info:
        _prune(resnet_like(), torch.randn(1, 3, 32, 32), ratio=0.5, ignore=["layers.2.conv9"])
    assert "did you mean" in info.value.hint and "layers.2.conv1" in info.value.hint


def test_global_pruning_ranks_across_layers():
    """Local pruning halves every layer; global pruning gives layers different ratios."""
    x = torch.randn(1, 3, 32, 32)
    local, glob = resnet_like(), resnet_like()
    before = layer_widths(local)
    _prune(local, x, ratio=0.5)
    _prune(glob, x, ratio=0.5, global_pruning=True)
    ratios = {n: w["out"] / before[n]["out"] for n, w in layer_widths(glob).items() if n != "fc"}
    assert {round(r, 2) for n, r in ratios.items()} != {0.5}
    assert max(ratios.values()) - min(ratios.values()) > 0.1
    assert {w["out"] / before[n]["out"] for n, w in layer_widths(local).items() if n != "fc"} == {0.5}
    assert glob(x).shape == (1, 10)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_prunes(criterion):
    model, x = resnet_like(), torch.randn(2, 3, 32, 32)
    _prune(model, x, ratio=0.3, criterion=criterion)
    assert layer_widths(model)["layers.6.conv1"]["out"] < 128
    assert all(p.grad is None for p in model.parameters())  # gradient criteria clean up after themselves


def test_iterative_steps_reach_the_same_width():
    model, x = resnet_like(), torch.randn(1, 3, 32, 32)
    _prune(model, x, ratio=0.5, iterative_steps=3)
    assert layer_widths(model)["layers.6.conv1"]["out"] == 64


def test_ratio_zero_changes_nothing():
    model, x = resnet_like(), torch.randn(1, 3, 32, 32)
    before = layer_widths(model)
    _prune(model, x, ratio=0.0)
    assert layer_widths(model) == before


def test_criteria_disagree_on_which_channels_go():
    """l1 and bn-scale rank channels differently on this model: the criterion is really used."""
    x = torch.randn(1, 3, 32, 32)
    kept = {}
    for criterion in ("l1", "bn-scale"):
        model = resnet_like()
        with torch.no_grad():
            bn = dict(model.named_modules())["stem.1"]
            bn.weight.copy_(torch.linspace(1.0, 0.01, bn.weight.numel()))  # BN scale favours low indices
            conv = dict(model.named_modules())["stem.0"]
            conv.weight.mul_(torch.linspace(0.01, 1.0, conv.out_channels).view(-1, 1, 1, 1))  # L1 favours high
            bn.running_mean.copy_(torch.arange(bn.weight.numel(), dtype=torch.float))  # tags each channel
        _prune(model, x, ratio=0.5, criterion=criterion)
        kept[criterion] = set(dict(model.named_modules())["stem.1"].running_mean.long().tolist())
    assert kept["l1"] != kept["bn-scale"]
