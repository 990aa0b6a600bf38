"""Numbers that are not finite, wherever they enter: --data/--val-data/--calib-data samples holding NaN or Inf
(every form), an empty text file, and BatchNorm statistics or a training loss that turn NaN during recovery.
Each is one line (UserError) naming where it happened."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import MODELS, assert_user_error
from models import digits_cnn
from prune2deploy.config.options import CompileOptions
from prune2deploy.context import ExampleInputs
from prune2deploy.data.load import load_data, train_val_batches
from prune2deploy.errors import UserError

EXAMPLE = ExampleInputs((torch.zeros(1, 1, 8, 8),), {})


def error_of(spec, what="--data", model=None, example=EXAMPLE, **options) -> str:
    with pytest.raises(UserError) as info:
        load_data(str(spec), model or digits_cnn(), example, CompileOptions(**options), what=what)
    line = info.value.one_line()
    assert "\n" not in line
    return line


def samples(n=40, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "Inf"), (-float("inf"), "Inf")])
def test_pt_file_with_a_non_finite_sample_names_the_first(tmp_path, value, kind):
    x = samples(3000)  # more than one chunk of the scan: the index is the sample's, not the chunk's
    x[2100, 0, 4, 4] = value
    x[2900, 0, 0, 0] = value
    torch.save((x, torch.zeros(3000, dtype=torch.int64)), tmp_path / "d.pt")
    line = error_of(tmp_path / "d.pt")
    assert f"--data {tmp_path / 'd.pt'}: sample 2100 holds {kind}" in line
    assert "not finite" in line


def test_npz_with_inf_and_values_beyond_float32(tmp_path):
    x = samples(50).numpy()
    x[7, 0, 1, 1] = np.inf
    np.savez(tmp_path / "inf.npz", inputs=x)
    assert "sample 7 holds Inf" in error_of(tmp_path / "inf.npz", what="--val-data")
    assert error_of(tmp_path / "inf.npz", what="--val-data").startswith(f"--val-data {tmp_path / 'inf.npz'}")
    big = samples(5).numpy().astype(np.float64)
    big[3] *= 1e300  # finite in float64, Inf once cast to the model's float32
    np.savez(tmp_path / "big.npz", inputs=big)
    assert "sample 3 holds Inf (input input, as float32)" in error_of(tmp_path / "big.npz", what="--calib-data")


def test_callable_batches_count_samples_across_batches(tmp_path):
    path = tmp_path / "source.py"
    path.write_text(textwrap.dedent("""
        import torch

        def stacked():  # batches of one shape: stacked, re-batched
            batches = [torch.zeros(4, 1, 8, 8) for _ in range(5)]
            batches[3][2, 0, 5, 5] = float("nan")
            return batches

        def ragged():  # batches of different shapes: kept whole
            batches = [torch.zeros(4, 1, 8, 8), torch.zeros(3, 1, 8, 10), torch.zeros(2, 1, 8, 12)]
            batches[2][1, 0, 0, 0] = float("inf")
            return batches
    """))
    assert "sample 14 holds NaN" in error_of(f"{path}:stacked")
    assert "sample 8 (row 1 of batch 2) holds Inf" in error_of(f"{path}:ragged")


def test_finite_data_still_loads_and_split_data_is_checked(tmp_path):
    torch.save(samples(), tmp_path / "ok.pt")
    assert sum(b.tensors()[0].shape[0] for b, _ in load_data(str(tmp_path / "ok.pt"), digits_cnn(), EXAMPLE,
                                                               CompileOptions())) == 40
    x = samples()
    x[33, 0, 0, 0] = float("nan")
    torch.save(x, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="sample 33 holds NaN"):
        train_val_batches(CompileOptions(data=str(tmp_path / "bad.pt")), digits_cnn(), EXAMPLE)


def test_empty_text_file_is_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n   \n\n")
    for name in ("empty.txt", "blank.txt"):
        line = error_of(f"text:{tmp_path / name}")
        assert "holds no sentences" in line and name in line


def test_nan_data_through_the_cli(p2d, tmp_path):
    x = torch.randn(20, 3, 32, 32)
    x[11, 1, 2, 3] = float("nan")
    torch.save((x, torch.zeros(20, dtype=torch.int64)), tmp_path / "nan.pt")
    r = p2d("compile", f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32", "--data", "nan.pt", "--recover",
            "none", "--out", "out")
    assert_user_error(r, "--data nan.pt", "sample 11 holds NaN")
    assert not (tmp_path / "out").exists()


# --- recovery -----------------------------------------------------------------------------------


def test_bn_reestimation_that_overflows_names_the_layer_and_batch():
    from prune2deploy.recovery.bn_recalibration import recalibrate_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    fine = [(ExampleInputs((torch.randn(8, 1, 8, 8),), {}), None) for _ in range(2)]
    huge = [(ExampleInputs((torch.full((8, 1, 8, 8), 1e30) * torch.randn(8, 1, 8, 8),), {}), None)]
    assert recalibrate_bn(model, fine) == 1
    with pytest.raises(UserError) as info:
        recalibrate_bn(model, fine + huge)
    line = info.value.one_line()
    assert "BatchNorm re-estimation" in line and "running_var of layer 1 (BatchNorm2d) became Inf" in line and "at batch 3 of 3" in line
    assert "--data" in line and "--lr" in line


def test_recovery_stops_on_a_non_finite_loss_naming_the_step():
    from prune2deploy.recovery.trainer import RecoveryConfig, recover

    class Blows(nn.Module):  # finite until its weight grows past a threshold, then Inf
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            out = self.fc(x)
            return out * float("inf") if self.training and getattr(self, "steps", 0) >= 2 else out

    torch.manual_seed(0)
    student, teacher = Blows(), Blows()
    teacher.load_state_dict(student.state_dict())
    batches = [(ExampleInputs((torch.randn(4, 4),), {}), torch.randint(0, 3, (4,))) for _ in range(4)]
    calls = {"n": 0}
    original = student.forward

    def counting(x):
        student.steps = calls["n"]
        calls["n"] += 1
        return original(x)

    student.forward = counting
    with pytest.raises(UserError) as info:
        recover(student, teacher, batches, batches[:1], lambda m, b: 0.0, RecoveryConfig(epochs=2, lr=0.5), 0.0)
    line = info.value.one_line()
    assert "training loss became" in line and "at step 3 (epoch 1)" in line and "lower --lr (now 0.5)" in line
