"""The ONNX check finds each N:M layer's initializer and notices a weight that lost the pattern."""
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import VerificationError
from prune2deploy.backends.onnx.sparsity import assert_onnx_nm, check_onnx_nm
from prune2deploy.passes.sparsity import SparsityPass


class ConvAndLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 32)  # 2-D input: Gemm(transB=1) on "head.weight"
        self.fc = nn.Linear(32, 16)  # 3-D input: MatMul on a transposed "onnx::MatMul_N"

    def forward(self, x):
        y = torch.relu(self.head(self.features(x).mean((2, 3))))
        return self.fc(y.unsqueeze(1).expand(-1, 4, -1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = ConvAndLinear().eval()
    with torch.no_grad():  # a BatchNorm that is not the identity, so folding it changes the conv weight
        model.features[1].weight.uniform_(0.5, 2.0), model.features[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 8, 8)
    record = SparsityPass(2, 4).run(model, CompileContext(example_inputs=ExampleInputs((x,))))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False)
    return model, record, path


def _set_initializer(proto, name, array):
    for i, init in enumerate(proto.graph.initializer):
        if init.name == name:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))


def test_exported_layers_hold_the_pattern(exported):
    model, record, path = exported
    assert [layer["name"] for layer in record["layers"]] == ["features.0", "features.3", "head", "fc"]
    results = {r["name"]: r for r in assert_onnx_nm(path, record["layers"], 2, 4)}
    assert all(r["holds"] for r in results.values())
    assert results["features.3"] == {"name": "features.3", "initializer": "features.3.weight", "axis": 1,
                                     "holds": True, "match": "name"}
    assert results["features.0"]["match"] == "scope" and results["features.0"]["axis"] == 1  # BN folded in
    assert results["head"]["initializer"] == "head.weight" and results["head"]["axis"] == 1  # Gemm transB=1
    assert results["fc"]["initializer"].startswith("onnx::MatMul") and results["fc"]["axis"] == 0
    assert results["fc"]["match"] == "scope"


@pytest.mark.parametrize("layer", ["fc", "features.0"])
def test_flipped_zero_is_caught_naming_the_layer(exported, tmp_path, layer):
    model, record, path = exported
    found = {r["name"]: r for r in check_onnx_nm(path, record["layers"], 2, 4)}[layer]
    proto = onnx.load(str(path))
    array = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == found["initializer"])).copy()
    array[tuple(np.argwhere(array == 0)[0])] = 1.0
    _set_initializer(proto, found["initializer"], array)
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    results = {r["name"]: r["holds"] for r in check_onnx_nm(broken, record["layers"], 2, 4)}
    assert [name for name, holds in results.items() if not holds] == [layer]
    with pytest.raises(VerificationError, match=f"'{layer}'"):
        assert_onnx_nm(broken, record["layers"], 2, 4)


def test_fp16_external_data(exported, tmp_path):
    _, record, path = exported
    proto = onnx.load(str(path))
    for init in list(proto.graph.initializer):
        _set_initializer(proto, init.name, numpy_helper.to_array(init).astype(np.float16))
    target = tmp_path / "fp16.onnx"
    onnx.save(proto, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
              location="fp16.onnx.data", size_threshold=0)
    assert (tmp_path / "fp16.onnx.data").exists()
    assert all(r["holds"] for r in assert_onnx_nm(target, record["layers"], 2, 4))


def test_value_matching_without_names(exported):
    model, record, path = exported
    proto = onnx.load(str(path))
    renames = {init.name: f"w{i}" for i, init in enumerate(proto.graph.initializer)}
    for init in proto.graph.initializer:
        init.name = renames[init.name]
    for node in proto.graph.node:
        node.name = ""
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    results = {r["name"]: r for r in check_onnx_nm(proto, record["layers"], 2, 4, model=model)}
    assert {n: r["match"] for n, r in results.items()} == {
        "features.0": None, "features.3": "value", "head": "value", "fc": "value"}
    assert results["fc"]["axis"] == 0 and results["head"]["axis"] == 1
    assert not results["features.0"]["holds"]  # BN-folded weight differs from torch's: reported, not guessed
