"""Channel permutation: same function before masking, never less kept magnitude."""
import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.passes.permute import permute_for_sparsity, search_permutation
from prune2deploy.passes.nm import kept_fraction


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 16)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 32, 1), nn.Conv2d(32, 32, 1)

    def forward(self, x):
        a = self.conv1(x)
        return self.conv3(torch.relu(self.conv2(a) + a))


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))


def _randomize_batchnorm(model):
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.normal_(), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)


def _sparse_layers(model):
    return [n for n, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]


def _permute_and_compare(model, x):
    model.eval()
    with torch.no_grad():
        before = model(x)
    weights = {n: p.clone() for n, p in model.named_parameters()}
    result = permute_for_sparsity(model, ExampleInputs((x,)), 2, 4, _sparse_layers(model), time_budget_s=1.0)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, weights[n])}
    return result, changed


def test_cnn_function_preserved_and_kept_not_lower():
    torch.manual_seed(0)
    model = SmallCNN()
    _randomize_batchnorm(model)
    result, changed = _permute_and_compare(model, torch.randn(2, 16, 8, 8))
    assert not result["conv1"]["permuted"]  # reads the model input
    assert result["conv2"]["permuted"] and result["fc"]["permuted"]
    # the producers' outputs, the BatchNorms and the consumers' inputs moved together
    assert {"conv1.weight", "conv1.bias", "bn1.weight", "conv2.weight", "conv2.bias", "bn2.bias", "fc.weight"} <= changed
    for name in ("conv2", "fc"):
        assert result[name]["kept"] >= result[name]["kept_unpermuted"]
        assert result[name]["kept"] == kept_fraction(dict(model.named_modules())[name].weight, 2, 4)


def test_mlp_function_preserved_and_kept_not_lower():
    torch.manual_seed(1)
    model = mlp()
    result, _ = _permute_and_compare(model, torch.randn(4, 32))
    assert [n for n, r in result.items() if r["permuted"]] == ["2", "4"]
    assert all(r["kept"] >= r["kept_unpermuted"] for r in result.values())


def test_clustered_large_channels_gain_strictly():
    torch.manual_seed(2)
    model = mlp()
    with torch.no_grad():  # the 16 strongest input channels of layer "2" sit together in 4 groups
        model[2].weight[:, :16] *= 10.0
    result, _ = _permute_and_compare(model, torch.randn(4, 32))
    assert result["2"]["permuted"]
    assert result["2"]["kept"] > result["2"]["kept_unpermuted"] + 0.1


def test_residual_add_is_not_permuted():
    torch.manual_seed(3)
    model = Residual()
    result, changed = _permute_and_compare(model, torch.randn(2, 16, 4, 4))
    assert not result["conv2"]["permuted"] and "Add" in result["conv2"]["reason"]
    assert not result["conv3"]["permuted"]
    assert changed == set()


def test_search_permutation_is_a_permutation_that_never_loses():
    torch.manual_seed(4)
    rows = torch.randn(32, 40)
    perm = search_permutation(rows, 2, 4, time_budget_s=1.0)
    assert torch.equal(perm.sort().values, torch.arange(32))
    as_linear = lambda r: r.t()  # rows are input channels: Linear weight is [out, in]
    assert kept_fraction(as_linear(rows[perm]), 2, 4) > kept_fraction(as_linear(rows), 2, 4)
