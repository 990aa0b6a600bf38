"""Bad input: exit 2, one line on stderr, no traceback, and no output directory left behind."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, assert_user_error

RESNET = f"{MODELS}:resnet_like"


def _no_output(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "p2d-out").exists()


def test_missing_file(p2d, tmp_path):
    r = p2d("compile", "missing.pt", "--input-shape", "1,3,32,32", "--out", "out")
    assert_user_error(r, "model file not found", "missing.pt")
    _no_output(tmp_path)


def test_truncated_pt(p2d, tmp_path):
    torch.save(nn.Sequential(nn.Linear(4, 4)), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    r = p2d("compile", "trunc.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, "trunc.pt", "truncated or corrupt")
    _no_output(tmp_path)


def test_pickle_that_is_not_a_model(p2d, tmp_path):
    torch.save({"weight": torch.ones(2)}, tmp_path / "sd.pt")
    r = p2d("compile", "sd.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, "not an nn.Module", "--weights")
    _no_output(tmp_path)


def test_pickle_with_untrusted_class(p2d, tmp_path):
    import sys

    sys.path.insert(0, str(MODELS.parent))
    before = sys.modules.get("models")  # other test files hold its classes: put it back, or they stop pickling
    try:
        import models  # tests/models.py as a top-level module, the way a user's own code would be

        torch.save(models.mobilenet_like(), tmp_path / "custom.pt")
    finally:
        sys.path.remove(str(MODELS.parent))
        if before is None:
            sys.modules.pop("models", None)
        else:
            sys.modules["models"] = before
    r = p2d("compile", "custom.pt", "--input-shape", "1,3,32,32", "--out", "out")
    assert_user_error(r, "references class models.InvertedResidual (and 2 more)", "--trust models")
    _no_output(tmp_path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("form", ["torch.save", "plain pickle"])
def test_pickle_payload_does_not_run(p2d, tmp_path, form):
    marker = tmp_path / "pwned"
    if form == "torch.save":
        torch.save(_RunsCode(str(marker)), tmp_path / "evil.pt")
    else:
        (tmp_path / "evil.pt").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    r = p2d("compile", "evil.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, "not trusted", "nothing was run")
    assert not marker.exists(), "the pickle's payload ran"
    _no_output(tmp_path)


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "1.5"])
def test_ratio_outside_range(p2d, tmp_path, ratio):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--ratio", ratio, "--out", "out")
    assert_user_error(r, "outside [0, 1)")
    _no_output(tmp_path)


def test_unknown_target(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--target", "tpu-v9", "--out", "out")
    assert_user_error(r, "unknown target 'tpu-v9'", "ort-cpu")
    _no_output(tmp_path)


def test_unknown_criterion(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--criterion", "vibes", "--out", "out")
    assert_user_error(r, "unknown criterion 'vibes'", "taylor")
    _no_output(tmp_path)


def test_wrong_input_shape(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,4,32,32", "--out", "out")
    assert_user_error(r, "does not run on the example inputs", "input[1x4x32x32]")
    _no_output(tmp_path)


def test_wrong_input_dtype(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input", "x:1x3x32x32:int64", "--out", "out")
    assert_user_error(r, "does not run on the example inputs", "int64")
    _no_output(tmp_path)


def test_ignore_unknown_layer(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--ignore", "layers.0.conv9", "--out", "out")
    assert_user_error(r, "layers.0.conv9", "did you mean")
    _no_output(tmp_path)


def test_bad_shape_text(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,three,32", "--out", "out")
    assert_user_error(r, "bad shape")
    _no_output(tmp_path)


def test_debug_shows_traceback(p2d, tmp_path):
    r = p2d("--debug", "compile", "missing.pt", "--input-shape", "1,4")
    assert r.code != 0 and "Traceback" in r.stderr
