"""N:M mask helpers and SparsityPass: exact pattern counts, eligibility, ensure."""
import pytest
import torch
import torch.nn as nn

from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import P2DError, UserError
from prune2deploy.config.values import parse_pattern
from prune2deploy.passes.nm import holds_nm, kept_fraction, nm_mask
from prune2deploy.passes.sparsity import SparsityPass


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 1 : 8 ") == (1, 8)
    for bad in ("4:2", "2:2", "0:4", "2-4", "a:b", "2:4:8", "-1:4"):
        with pytest.raises(UserError):
            parse_pattern(bad)


def test_nm_mask_conv_keeps_two_largest_per_group_along_c():
    torch.manual_seed(0)
    weight = torch.randn(8, 16, 3, 3)
    mask = nm_mask(weight, 2, 4)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    groups = mask.permute(0, 2, 3, 1).reshape(8, 3, 3, 4, 4)  # [K, R, S, C/4, 4]
    assert (groups.sum(-1) == 2).all()
    magnitudes = weight.abs().permute(0, 2, 3, 1).reshape(8, 3, 3, 4, 4)
    kept = (magnitudes * groups).sum(-1)
    top2 = magnitudes.sort(-1, descending=True).values[..., :2].sum(-1)
    assert torch.allclose(kept, top2)
    assert holds_nm(weight * mask, 2, 4) and not holds_nm(weight, 2, 4)
    # the groups run along C, not along the kernel width: a column of 4 nonzeros along S is fine
    along_s = torch.zeros(8, 16, 1, 4)
    along_s[:, 0, 0, :] = 1.0
    assert holds_nm(along_s, 2, 4) and not holds_nm(along_s, 2, 4, axis=3)


def test_nm_mask_linear_groups_along_in():
    weight = torch.tensor([[1.0, -5.0, 2.0, 4.0, 0.1, 0.2, 0.3, -0.4]])
    assert nm_mask(weight, 2, 4).tolist() == [[False, True, False, True, False, False, True, True]]
    assert kept_fraction(weight, 2, 4) == pytest.approx((5 + 4 + 0.3 + 0.4) / weight.abs().sum().item())


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)  # eligible
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)  # grouped
        self.narrow = nn.Conv2d(32, 8, 1)  # eligible
        self.thin = nn.Conv2d(8, 16, 1)  # C=8 not a multiple of 16
        self.fc = nn.Linear(16, 16)  # eligible
        self.head = nn.Linear(16, 10)  # 10 outputs, not a multiple of 8

    def forward(self, x):
        x = self.thin(self.narrow(self.depthwise(self.conv(x))))
        return self.head(self.fc(x.mean((2, 3))))


def _ctx(x):
    return CompileContext(example_inputs=ExampleInputs((x,)))


def test_pass_masks_eligible_layers_and_lists_skipped():
    torch.manual_seed(0)
    model = Mixed()
    sparsity = SparsityPass(2, 4, skip=["fc"])
    record = sparsity.run(model, _ctx(torch.randn(1, 16, 8, 8)))
    assert record["pattern"] == "2:4"
    assert [layer["name"] for layer in record["layers"]] == ["conv", "narrow"]
    assert {layer["name"]: layer["axis"] for layer in record["layers"]} == {"conv": "C", "narrow": "C"}
    reasons = {s["name"]: s["reason"] for s in record["skipped"]}
    assert set(reasons) == {"depthwise", "thin", "fc", "head"}
    assert "groups=32" in reasons["depthwise"] and "8" in reasons["thin"]
    assert reasons["fc"] == "skipped by user" and "10" in reasons["head"]
    # random weights have no zeros, so exactly half survive in masked layers, none die elsewhere
    assert int((model.conv.weight != 0).sum()) == model.conv.weight.numel() // 2
    assert int((model.narrow.weight != 0).sum()) == model.narrow.weight.numel() // 2
    assert int((model.fc.weight != 0).sum()) == model.fc.weight.numel()
    assert all(0.5 < layer["kept_magnitude"] < 1.0 and not layer["permuted"] for layer in record["layers"])
    assert "kept_magnitude_unpermuted" not in record["layers"][0]


def test_ensure_detects_broken_pattern():
    torch.manual_seed(0)
    model, ctx = Mixed(), _ctx(torch.randn(1, 16, 8, 8))
    sparsity = SparsityPass(2, 4)
    ctx.records["sparsity"] = sparsity.run(model, ctx)
    sparsity.ensure(model, ctx)
    with torch.no_grad():
        zero = (model.narrow.weight == 0).nonzero()[0]
        model.narrow.weight[tuple(zero)] = 1.0
    with pytest.raises(P2DError, match="narrow"):
        sparsity.ensure(model, ctx)


def test_pass_with_permute_reports_both_fractions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    sparsity = SparsityPass(2, 4, permute=True, permute_time_s=0.5)
    record = sparsity.run(model, _ctx(torch.randn(4, 32)))
    layers = {layer["name"]: layer for layer in record["layers"]}
    assert not layers["0"]["permuted"] and "permute_skipped" in layers["0"]
    assert layers["2"]["permuted"] and layers["4"]["permuted"]
    for name in ("2", "4"):
        assert layers[name]["kept_magnitude"] > layers[name]["kept_magnitude_unpermuted"]
    sparsity.ensure(model, _ctx(torch.randn(4, 32)))
