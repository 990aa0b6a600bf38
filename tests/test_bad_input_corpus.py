"""The bad-input corpus: recipes (tests/bad_inputs/*.toml), flags, shapes, gates and commands. Each case:
exit 2, one `error:` line on stderr, no traceback, and nothing written (no output, no cache)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import MODELS, assert_user_error

CORPUS = Path(__file__).parent / "bad_inputs"
RESNET = f"{MODELS}:resnet_like"
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


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_bad_flags(p2d, tmp_path, case):
    args, fragments = FLAGS[case]
    (tmp_path / "afile").write_text("not a directory")
    assert_user_error(p2d("compile", *args), *fragments)
    _nothing_written(tmp_path, keep=("afile",))


def test_example_inputs_that_are_not_tensors(p2d, tmp_path):
    torch.save({"x": "text"}, tmp_path / "inputs.pt")
    assert_user_error(p2d("compile", RESNET, "--example-inputs", "inputs.pt"), "not tensors")
    _nothing_written(tmp_path, keep=("inputs.pt",))


@pytest.mark.parametrize("command", ["verify", "build", "bench"])
def test_commands_on_a_directory_p2d_did_not_write(p2d, tmp_path, command):
    (tmp_path / "empty").mkdir()
    assert_user_error(p2d(command, "empty"), "empty")
    _nothing_written(tmp_path, keep=("empty",))
