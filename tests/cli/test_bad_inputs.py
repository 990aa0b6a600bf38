"""Bad input through the CLI: exit 2, one `error:` line on stderr, no traceback, and nothing written (no output,
no cache). The corpus below runs recipes (tests/fixtures/bad_inputs/*.toml), flags, shapes, gates and commands."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, REPO, assert_user_error, slow_except

RESNET = f"{MODELS}:resnet_like"


def _no_output(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "p2d-out").exists()


def test_missing_file(p2d, tmp_path):
    r = p2d("compile", "missing.pt", "--input-shape", "1,3,32,32", "--out", "out")
    assert_user_error(r, "model file not found", "missing.pt")
    _no_output(tmp_path)


@pytest.mark.slow
def test_truncated_pt(p2d, tmp_path):
    torch.save(nn.Sequential(nn.Linear(4, 4)), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    r = p2d("compile", "trunc.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, "trunc.pt", "truncated or corrupt")
    _no_output(tmp_path)


@pytest.mark.slow
def test_pickle_that_is_not_a_model(p2d, tmp_path):
    torch.save({"weight": torch.ones(2)}, tmp_path / "sd.pt")
    r = p2d("compile", "sd.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, "not an nn.Module", "--weights")
    _no_output(tmp_path)


@pytest.mark.slow
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


@pytest.mark.parametrize("form", slow_except(["torch.save", "plain pickle"], "torch.save"))
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
@pytest.mark.slow
def test_ratio_outside_range(p2d, tmp_path, ratio):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--ratio", ratio, "--out", "out")
    assert_user_error(r, "outside [0, 1)")
    _no_output(tmp_path)


@pytest.mark.slow
def test_unknown_target(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--target", "tpu-v9", "--out", "out")
    assert_user_error(r, "unknown target 'tpu-v9'", "ort-cpu")
    _no_output(tmp_path)


@pytest.mark.slow
def test_unknown_criterion(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--criterion", "vibes", "--out", "out")
    assert_user_error(r, "unknown criterion 'vibes'", "taylor")
    _no_output(tmp_path)


@pytest.mark.slow
def test_wrong_input_shape(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,4,32,32", "--out", "out")
    assert_user_error(r, "does not run on the example inputs", "input[1x4x32x32]")
    _no_output(tmp_path)


@pytest.mark.slow
def test_wrong_input_dtype(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input", "x:1x3x32x32:int64", "--out", "out")
    assert_user_error(r, "does not run on the example inputs", "int64")
    _no_output(tmp_path)


@pytest.mark.slow
def test_ignore_unknown_layer(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--ignore", "layers.0.conv9", "--out", "out")
    assert_user_error(r, "layers.0.conv9", "did you mean")
    _no_output(tmp_path)


@pytest.mark.slow
def test_bad_shape_text(p2d, tmp_path):
    r = p2d("compile", RESNET, "--input-shape", "1,three,32", "--out", "out")
    assert_user_error(r, "bad shape")
    _no_output(tmp_path)


def test_debug_shows_traceback(p2d, tmp_path):
    r = p2d("--debug", "compile", "missing.pt", "--input-shape", "1,4")
    assert r.code != 0 and "Traceback" in r.stderr


# --- the corpus -------------------------------------------------------------------------------------------

CORPUS = REPO / "tests" / "fixtures" / "bad_inputs"
SHAPE = ["--input-shape", "1,3,32,32"]

RECIPES = {  # file -> fragments the one line must contain
    "unknown_key.toml": ["unknown_key.toml:5:1", "ration", "did you mean 'ratio'"],
    "wrong_type.toml": ["wrong_type.toml:5", "prune.ratio must be a number"],
    "out_of_range.toml": ["out_of_range.toml:5", "seconds"],
    "syntax_error.toml": ["syntax_error.toml:2"],
    "bad_gate.toml": ["bad_gate.toml:5", "speedup >> 2"],
    "two_input_forms.toml": ["two_input_forms.toml", "inputs"],
}

FLAGS = {
    "permute without sparsity": ([RESNET, *SHAPE, "--permute"], ["--permute needs --sparsity"]),
    "sparsity N >= M": ([RESNET, *SHAPE, "--sparsity", "5:4"], ["5:4"]),
    "sparsity not N:M": ([RESNET, *SHAPE, "--sparsity", "half"], ["half"]),
    "gate syntax": ([RESNET, *SHAPE, "--gate", "speedup=>2"], ["speedup=>2"]),
    "gate threshold not a number": ([RESNET, *SHAPE, "--gate", "speedup>=fast"], ["fast"]),
    "missing weights file": ([RESNET, *SHAPE, "--weights", "nope.pt"], ["weights file not found"]),
    "missing calibration file": ([RESNET, *SHAPE, "--criterion", "taylor", "--calib-data", "nope.pt"],
                                 ["calibration data not found"]),
    "missing data file": ([RESNET, *SHAPE, "--data", "nope.npz"], ["--data", "data not found: nope.npz"]),
    "data of no known form": ([RESNET, *SHAPE, "--data", "data.csv"], ["not a data form p2d reads"]),
    "val split out of range": ([RESNET, *SHAPE, "--val-split", "1"], ["val-split 1.0 is outside [0, 1)"]),
    "unknown metric": ([RESNET, *SHAPE, "--metric", "f1"], ["unknown metric 'f1'"]),
    "metric without data": ([RESNET, *SHAPE, "--metric", "cosine"], ["--metric cosine needs validation data"]),
    "two input forms": ([RESNET, *SHAPE, "--input", "x:1x3x32x32:float32"], ["give the model's inputs once"]),
    "no inputs": ([RESNET], ["give the model's inputs once"]),
    "unknown dtype": ([RESNET, "--input", "x:1x3x32x32:float64x"], ["unknown dtype"]),
    "zero dimension": ([RESNET, "--input-shape", "1,0,32,32"], ["dimensions must be positive"]),
    "no model": (["--input-shape", "1,3,32,32"], ["no model given"]),
    "module without that callable": (["prune2deploy.examples:nope", *SHAPE], ["has no attribute nope"]),
    "iterative steps zero": ([RESNET, *SHAPE, "--iterative-steps", "0"], ["iterative-steps must be >= 1"]),
    "negative tolerance": ([RESNET, *SHAPE, "--tolerance", "-1"], ["tolerance"]),
    "unknown pruning mode": ([RESNET, *SHAPE, "--pruning-mode", "blocks"], ["unknown pruning mode 'blocks'",
                                                                           "block-local"]),
    "zero graph budget": ([RESNET, *SHAPE, "--graph-budget-s", "0"], ["graph-budget-s", "> 0"]),
    "out is a file": ([RESNET, *SHAPE, "--out", "afile"], ["not a directory"]),
    "out under a file (unwritable)": ([RESNET, *SHAPE, "--out", "afile/sub/out"], ["not writable"]),
    "missing config file": (["--config", "nope.toml"], ["nope.toml"]),
}


def _nothing_written(tmp_path, keep=()):
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in keep)
    assert left == [], f"bad input left files behind: {left}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bad_recipe(p2d, tmp_path, name):
    (tmp_path / name).write_text((CORPUS / name).read_text())
    assert_user_error(p2d("compile", "--config", name), *RECIPES[name])
    _nothing_written(tmp_path, keep=(name,))


@pytest.mark.parametrize("case", slow_except(sorted(FLAGS), "missing config file", "no model"))
def test_bad_flags(p2d, tmp_path, case):
    args, fragments = FLAGS[case]
    (tmp_path / "afile").write_text("not a directory")
    assert_user_error(p2d("compile", *args), *fragments)
    _nothing_written(tmp_path, keep=("afile",))


@pytest.mark.slow
def test_example_inputs_that_are_not_tensors(p2d, tmp_path):
    torch.save({"x": "text"}, tmp_path / "inputs.pt")
    assert_user_error(p2d("compile", RESNET, "--example-inputs", "inputs.pt"), "not tensors")
    _nothing_written(tmp_path, keep=("inputs.pt",))


@pytest.mark.parametrize("command", ["verify", "build", "bench"])
@pytest.mark.slow
def test_commands_on_a_directory_p2d_did_not_write(p2d, tmp_path, command):
    (tmp_path / "empty").mkdir()
    assert_user_error(p2d(command, "empty"), "empty")
    _nothing_written(tmp_path, keep=("empty",))
