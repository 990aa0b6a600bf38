"""--max-drop: layers go back to FP32 until the deployed INT8 model fits the floor (ov-cpu: NNCF's accuracy
control; ort-cpu: a measured per-layer exclusion), on a real task (scikit-learn's digits) with one layer built to
be INT8-sensitive; bad values and a floor nothing meets are one line, exit 2."""
from __future__ import annotations

import pytest
import torch

from digits import digits, sensitive_digits_cnn
from helpers import MODELS, assert_user_error

from prune2deploy.errors import UserError


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    torch.save(digits(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ort-cpu", "ov-cpu"])
def test_max_drop_puts_the_sensitive_layer_back_in_fp32(target, digits_file, tmp_path):
    from prune2deploy.pipeline import Output, compile

    keywords = dict(target=target, ratio=0.2, ignore=["features.0"], data=str(digits_file), val_split=0.2,
                    recover="none", precision="int8", skip_benchmark=True, output=Output(use_cache=False))
    model = sensitive_digits_cnn()
    from prune2deploy.errors import VerificationError

    with pytest.raises(VerificationError, match="int8 dense model drifts"):  # plain INT8 wrecks it
        compile(model, torch.zeros(1, 1, 8, 8), out_dir=tmp_path / "plain", **keywords)
    assert not (tmp_path / "plain").exists()
    report = compile(model, torch.zeros(1, 1, 8, 8), out_dir=tmp_path / "floor", max_drop=1.0, **keywords).report
    acc, fallback = report["accuracy"], report["lowered"]["dense"]["fallback"]
    assert acc["dense"] > 90 and acc["dense"] - acc["dense_deployed"] <= 1.0 and acc["drop_deployed"] <= 1.0
    assert acc["fits_max_drop"] and acc["max_drop"] == 1.0
    assert fallback["fits"] and fallback["drop"] <= 1.0
    # the layer that reads the outlier channels goes back to FP32, and little else
    assert any("features.3" in name for name in fallback["excluded"]) and len(fallback["excluded"]) <= 2
    if target == "ort-cpu":
        assert fallback["int8_drop"] > 20  # what plain INT8 cost, measured before the fallback


def _report(drop: float, deployed: float, fallback=None) -> dict:
    return {"accuracy": {"metric": "top1", "unit": "%", "drop": drop, "drop_deployed": deployed},
            "precision": {"deployed": "int8"}, "lowered": {"pruned": {"fallback": fallback}} if fallback else {}}


def test_a_floor_nothing_meets_names_the_best_drop_and_why():
    from prune2deploy.pipeline import _check_floor

    _check_floor(_report(0.2, 0.4), 0.5)  # fits: no error
    with pytest.raises(UserError, match=r"drops 0\.9 points of top1.*more than --max-drop 0\.5 with 1 layer\(s\) "
                                        r"back in FP32: int8 costs the rest") as info:
        _check_floor(_report(0.2, 0.9, {"excluded": ["conv3"]}), 0.5)
    assert "--ratio" in info.value.hint
    with pytest.raises(UserError, match="pruning alone already costs"):
        _check_floor(_report(1.5, 1.6), 0.5)


def test_bad_max_drop_values_are_one_line(p2d_in_process, tmp_path):
    digits_path = tmp_path / "d.pt"
    torch.save(digits(), digits_path)
    model = [f"{MODELS}:digits_cnn", "--input-shape", "1,1,8,8", "--out", "out"]
    assert_user_error(p2d_in_process("compile", *model, "--max-drop", "-1", "--data", str(digits_path)),
                      "max-drop -1", ">= 0")
    assert_user_error(p2d_in_process("compile", *model, "--max-drop", "0.5"), "--max-drop needs validation data")
    assert_user_error(p2d_in_process("compile", *model, "--test-data", str(digits_path)),
                      "--test-data is measured with the validation metric", "--val-data")
    assert_user_error(p2d_in_process("compile", *model, "--target", "trt-ampere", "--precision", "int8",
                                     "--sparsity", "2:4", "--data", str(digits_path)),
                      "--sparsity with --precision int8 on TensorRT is not built yet")
    from prune2deploy.backends.registry import availability

    if not availability("trt-ampere")[0]:  # the search times candidates on the target: here it cannot
        assert_user_error(p2d_in_process("compile", *model, "--target", "trt-ampere", "--max-drop", "0.5",
                                         "--data", str(digits_path)), "--max-drop searches by timing", "--ratio")
    assert not (tmp_path / "out").exists()


def test_ort_int8_leaves_no_layer_out_when_its_fp32_model_is_already_below_the_floor(monkeypatch, tmp_path):
    """Pruning alone costs more than --max-drop (a --max-drop search's aggressive candidate): putting layers back
    in FP32 cannot fit, so none is measured (on MiniLM each would be a pass over the validation data)."""
    from prune2deploy.backends.ort_cpu import quantize, runner
    from prune2deploy.data.metrics import drop

    class Floor:
        max_drop = 0.05

        def measure(self, _runner):
            return 0.70

        def drop(self, value):
            return drop(1.0, value)

        def fits(self, value):
            return self.drop(value) <= self.max_drop

        def budget(self, name):
            return self.max_drop - self.drop(0.75)  # the pruned FP32 model: cosine 0.75 < 0.95

    monkeypatch.setattr(runner, "OrtRunner", lambda *a, **k: object())
    monkeypatch.setattr(quantize, "exclusion_units", lambda *a: pytest.fail("no layer should be left out"))
    record = quantize._fall_back(tmp_path / "m.onnx", tmp_path / "q.onnx", [], Floor(), "pruned", 1)
    assert record["fits"] is False and record["evaluations"] == 1 and record["excluded"] == []
    assert record["drop"] == pytest.approx(0.30) and "below the floor" in record["note"]
