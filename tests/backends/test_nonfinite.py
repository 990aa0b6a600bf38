"""NaN or Inf in a model's outputs never passes: ONNX verification (either side), the fidelity check (either
model), `p2d verify`'s re-check, and a compile of a model whose output is NaN (exit 2, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import assert_user_error
from prune2deploy.backends.onnx.recheck import _max_rel_err, verify_out_dir
from prune2deploy.backends.onnx.verify import verify_onnx
from prune2deploy.context import ExampleInputs
from prune2deploy.errors import UserError, VerificationError
from prune2deploy.model.fidelity import fidelity

X = ExampleInputs((torch.randn(2, 4, generator=torch.Generator().manual_seed(0)),), {})


class _Runner:
    """Stands in for onnxruntime: returns fixed outputs."""

    def __init__(self, *outputs):
        self.outputs = [np.asarray(o, dtype=np.float32) for o in outputs]

    def run(self, feed):
        return self.outputs


def _reference(*tensors):
    return [[(f"out{i}", torch.as_tensor(t, dtype=torch.float32)) for i, t in enumerate(tensors)]]


GOOD = [[1.0, 2.0], [3.0, 4.0]]
NAN = [[1.0, float("nan")], [3.0, 4.0]]
INF = [[1.0, 2.0], [float("inf"), 4.0]]


@pytest.mark.parametrize("torch_side, onnx_side, note", [
    (GOOD, NAN, "NaN in the ONNX output"), (NAN, GOOD, "NaN in the torch reference"),
    (NAN, NAN, "NaN in the torch reference and NaN in the ONNX output"), (INF, GOOD, "Inf in the torch reference"),
    (GOOD, INF, "Inf in the ONNX output")])
def test_verify_onnx_fails_on_a_non_finite_value_of_either_side(torch_side, onnx_side, note):
    result = verify_onnx(_reference(torch_side, GOOD), _Runner(onnx_side, GOOD), [X], tolerance=1e-4)
    assert result["passed"] is False
    assert result["max_rel_err"] == float("inf") and result["worst_output"] == "out0"
    assert result["nonfinite"] == note
    bad, good = result["outputs"]
    assert bad["nonfinite"] == note and bad["max_rel_err"] == float("inf")
    assert "nonfinite" not in good and good["max_rel_err"] == 0.0
    assert "warning" not in bad


def test_verify_onnx_still_passes_finite_agreement():
    result = verify_onnx(_reference(GOOD), _Runner(np.asarray(GOOD) + 1e-7), [X], tolerance=1e-4)
    assert result["passed"] and result["max_rel_err"] < 1e-6 and "nonfinite" not in result["outputs"][0]


# --- fidelity -----------------------------------------------------------------------------------


class _Scaled(nn.Module):
    def __init__(self, factor=1.0, nan_from_set=None):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        torch.nn.init.constant_(self.fc.weight, 0.5)
        torch.nn.init.constant_(self.fc.bias, 0.1)
        self.factor, self.nan_from_set, self.calls = factor, nan_from_set, 0

    def forward(self, x):
        out = self.fc(x) * self.factor
        self.calls += 1
        if self.nan_from_set is not None and self.calls > self.nan_from_set:
            out = out * float("nan")
        return out


def _sets(n):
    return [ExampleInputs((torch.randn(2, 4, generator=torch.Generator().manual_seed(i)),), {}) for i in range(n)]


def test_fidelity_refuses_a_pruned_model_that_turns_nan():
    dense, pruned = _Scaled(), _Scaled(nan_from_set=2)
    pruned.load_state_dict(dense.state_dict())
    with pytest.raises(VerificationError) as info:
        fidelity(dense, pruned, _sets(5))
    line = info.value.one_line()
    assert "the pruned model's output is not finite on 3 of 5 check sets" in line and "first on set 3" in line
    assert "--data" in line


def test_fidelity_says_when_the_dense_model_itself_is_not_finite():
    dense, pruned = _Scaled(factor=float("inf")), _Scaled()
    with pytest.raises(UserError) as info:
        fidelity(dense, pruned, _sets(4))
    assert not isinstance(info.value, VerificationError)
    line = info.value.one_line()
    assert "the dense model's output is not finite on 4 of 4 check sets" in line and "model itself" in line


def test_fidelity_of_finite_models_is_a_number():
    dense = _Scaled()
    result = fidelity(dense, dense, _sets(3))
    assert result["cosine_min"] == pytest.approx(1.0)


# --- p2d verify ---------------------------------------------------------------------------------


def _out_dir(tmp_path, weight: float, reference_nan: bool):
    from prune2deploy.artifacts.manifest import REFERENCE, save_reference, write_manifest
    from prune2deploy.backends.onnx.export import export_onnx
    from prune2deploy.model.fidelity import reference_outputs

    out = tmp_path / "out"
    out.mkdir()
    model = _Scaled()
    with torch.no_grad():
        model.fc.weight.fill_(weight)
    export_onnx(model, X, out / "pruned.onnx", slim=False)
    references = reference_outputs(_Scaled(), [X])
    if reference_nan:
        references[0][0][1][0, 0] = float("nan")
    save_reference(out / REFERENCE, [X], {"pruned": references})
    (out / "report.json").write_text(json.dumps({"verification": {"tolerance": 1e-4}}))
    write_manifest(out, {})
    return out


@pytest.mark.parametrize("onnx_nan, reference_nan", [(True, False), (False, True)])
def test_recheck_fails_on_a_non_finite_side(tmp_path, onnx_nan, reference_nan):
    out = _out_dir(tmp_path, float("nan") if onnx_nan else 0.5, reference_nan)
    reference = torch.load(out / "verification_data.pt", weights_only=True)
    assert _max_rel_err(out / "pruned.onnx", reference["inputs"], reference["outputs"]["pruned"]) == float("inf")
    with pytest.raises(VerificationError) as info:
        verify_out_dir(out)
    line = info.value.one_line()
    side = "ONNX" if onnx_nan else "recorded torch"
    assert "pruned.onnx cannot be checked" in line and f"NaN in the {side} output 0 on check set 1" in line


def test_recheck_passes_a_finite_out_dir(tmp_path):
    out = _out_dir(tmp_path, 0.5, False)
    assert verify_out_dir(out)["passed"]


def test_p2d_verify_of_a_nan_onnx_exits_2(p2d, tmp_path):
    _out_dir(tmp_path, float("nan"), False)
    assert_user_error(p2d("verify", "out"), "pruned.onnx", "NaN in the ONNX output")


# --- a compile ------------------------------------------------------------------------------------


def test_compile_of_a_model_that_outputs_nan_fails_and_writes_nothing(p2d, tmp_path):
    (tmp_path / "nan_model.py").write_text(
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3))) * float('nan')\n"
        "def net():\n"
        "    return Net()\n")
    r = p2d("compile", "nan_model.py:net", "--input-shape", "1,3,16,16", "--out", "out")
    assert_user_error(r, "not finite", "NaN in output")
    assert not (tmp_path / "out").exists()
