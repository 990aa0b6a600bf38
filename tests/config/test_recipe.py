"""Recipes (p2d.toml): validation with FILE:LINE:COL errors, and flags-over-recipe precedence."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest

from prune2deploy.cli.app import build_parser
from prune2deploy.errors import UserError
from prune2deploy.config.recipe import compile_options, explicit_flags, load_recipe, merge, resolved_recipe

from helpers import REPO

EXAMPLE = REPO / "examples" / "p2d.toml"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "p2d.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, text))
    return info.value.one_line().replace(str(tmp_path / "p2d.toml"), "p2d.toml")


def test_example_recipe_loads():
    recipe = load_recipe(EXAMPLE)
    assert recipe.model == "prune2deploy.examples:small_resnet"
    assert recipe.inputs == {"shape": "1,3,64,64"}
    assert recipe.targets == ["ort-cpu"]
    assert recipe.options["ratio"] == 0.5
    assert "verification.max_rel_err<=1e-3" in recipe.gates and "speedup>=1.2" in recipe.gates
    assert recipe.ci.junit == "p2d-junit.xml" and recipe.ci.step_summary is True
    assert recipe.raw["prune"]["ratio"] == 0.5


def test_every_table_maps_to_options(tmp_path):
    recipe = load_recipe(write(tmp_path, """
        seed = 3
        [prune]
        ratio = 0.25
        head_ratio = 0.1
        criterion = "l2"
        global = true
        iterative_steps = 2
        round_to = 16
        ignore = ["fc"]
        [sparsity]
        pattern = "2:4"
        permute = true
        [export]
        exporter = "dynamo"
        opset = 17
        slim = false
        tolerance = 1e-4
        [benchmark]
        threads = 2
        seconds = 3
        warmup = 1
        min_iters = 5
        skip = true
        [ci]
        step_summary = false
        [limits]
        stage_timeout_s = 120
        max_memory_gb = 4.5
    """))
    assert recipe.options == {
        "seed": 3, "ratio": 0.25, "head_ratio": 0.1, "criterion": "l2", "global_pruning": True,
        "iterative_steps": 2, "round_to": 16, "ignore": ["fc"], "sparsity": "2:4", "permute": True,
        "exporter": "dynamo", "opset": 17, "slim": False, "tolerance": 1e-4, "threads": 2, "bench_seconds": 3.0,
        "warmup": 1, "min_iters": 5, "skip_benchmark": True}
    assert recipe.ci.step_summary is False and recipe.ci.junit is None
    assert (recipe.limits.stage_timeout_s, recipe.limits.max_memory_gb) == (120.0, 4.5)
    assert recipe.dest_values()["no_slim"] is True and recipe.dest_values()["no_step_summary"] is True


def test_toml_syntax_error_keeps_tomllib_position(tmp_path):
    assert error_of(tmp_path, """
        model = "m"
        [prune]
        ratio 0.5
    """) == "p2d.toml:3:7: invalid TOML: Expected '=' after a key in a key/value pair"
    assert error_of(tmp_path, 'targets = ["ort-cpu",\n') == "p2d.toml:1:22: invalid TOML: Invalid value"


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found: .*nope.toml"):
        load_recipe(tmp_path / "nope.toml")


def test_unknown_key_did_you_mean(tmp_path):
    assert error_of(tmp_path, """
        model = "m"

        [prune]
        ratio = 0.5
          ratoi = 0.5
    """) == "p2d.toml:5:3: unknown key 'ratoi' in [prune] (hint: did you mean 'ratio'?)"
    assert error_of(tmp_path, 'targt = ["ort-cpu"]\n') == \
        "p2d.toml:1:1: unknown key 'targt' (hint: did you mean 'targets'?)"
    assert error_of(tmp_path, "[prun]\nratio = 0.5\n") == \
        "p2d.toml:1:1: unknown key 'prun' (hint: did you mean 'prune'?)"


def test_unknown_key_position_is_section_aware(tmp_path):
    # `threads` exists in [benchmark] (line 2); the bad one is in [prune] (line 5).
    assert error_of(tmp_path, """
        [benchmark]
        threads = 2

        [prune]
        threads = 4
    """) == "p2d.toml:5:1: unknown key 'threads' in [prune] (hint: threads belongs in [benchmark])"
    assert error_of(tmp_path, "ratio = 0.5\n") == "p2d.toml:1:1: unknown key 'ratio' (hint: ratio belongs in [prune])"


def test_dotted_and_inline_keys_are_located(tmp_path):
    assert error_of(tmp_path, 'model = "m"\nprune.ratoi = 0.5\n').startswith("p2d.toml:2:1: unknown key 'ratoi'")
    assert error_of(tmp_path, 'inputs = { shape = "1,3", shap = 1 }\n').startswith(
        "p2d.toml:1:27: unknown key 'shap' in [inputs] (hint: did you mean 'shape'?)")


def test_multiline_arrays_do_not_confuse_the_scanner(tmp_path):
    # `["fc"]` alone on a line looks like a table header; it is an array element (a type error found later)
    assert error_of(tmp_path, """
        [prune]
        ignore = [
            ["fc"]
        ]
        ratoi = 2
    """) == "p2d.toml:5:1: unknown key 'ratoi' in [prune] (hint: did you mean 'ratio'?)"
    assert error_of(tmp_path, """
        [gates]
        checks = [
            "speedup>=2",
        ]
        [prune]
        ratio = 2
    """).startswith("p2d.toml:6:1: prune.ratio = 2.0: ratio 2.0 is outside [0, 1)")


@pytest.mark.parametrize("body, expected", [
    ('[prune]\nratio = "0.5"\n', "p2d.toml:2:1: prune.ratio must be a number, got string"),
    ("[prune]\nglobal = 1\n", "p2d.toml:2:1: prune.global must be a boolean, got integer"),
    ("[export]\nopset = 17.5\n", "p2d.toml:2:1: export.opset must be an integer, got float"),
    ('[prune]\nignore = ["fc", 3]\n', "p2d.toml:2:1: prune.ignore must be an array of strings, "
                                      "got an array holding integer 3"),
    ('targets = "ort-cpu"\n', "p2d.toml:1:1: targets must be an array of strings, got string"),
    ("prune = 0.5\n", "p2d.toml:1:1: prune must be a table ([prune]), got float"),
])
def test_wrong_type_names_expected_and_got(tmp_path, body, expected):
    assert error_of(tmp_path, body) == expected


@pytest.mark.parametrize("body, expected", [
    ("[prune]\nratio = 1.5\n", "p2d.toml:2:1: prune.ratio = 1.5: ratio 1.5 is outside [0, 1)"),
    ("[prune]\nhead_ratio = -0.1\n", "p2d.toml:2:1: prune.head_ratio = -0.1: head ratio -0.1 is outside [0, 1)"),
    ("[benchmark]\nseconds = -1\n", "p2d.toml:2:1: benchmark.seconds = -1.0: bench-seconds, warmup"),
    ("[prune]\niterative_steps = 0\n", "p2d.toml:2:1: prune.iterative_steps = 0: iterative-steps must be >= 1"),
    ('[prune]\ncriterion = "l3"\n', "p2d.toml:2:1: prune.criterion = 'l3': unknown criterion 'l3'"),
    ('[sparsity]\npattern = "4:2"\n', "p2d.toml:2:1: sparsity.pattern = '4:2': bad sparsity pattern"),
    ("[limits]\nstage_timeout_s = 0\n", "p2d.toml:2:1: limits.stage_timeout_s = 0.0 must be > 0"),
    ("[limits]\nmax_memory_gb = -2\n", "p2d.toml:2:1: limits.max_memory_gb = -2.0 must be > 0"),
    ("seed = -1\n", "p2d.toml:1:1: seed = -1 must be >= 0"),
    ('targets = ["ort-cpu",\n  "tpu"]\n', "p2d.toml:2:3: targets = 'tpu': unknown target 'tpu'"),
    ("targets = []\n", "p2d.toml:1:1: targets is empty"),
    ('[gates]\nchecks = ["speedup>=2", "speedup=>2"]\n', "p2d.toml:2:25: bad gate 'speedup=>2': unknown operator"),
    ("[sparsity]\npermute = true\n", "p2d.toml:2:1: sparsity.permute = true needs sparsity.pattern"),
    ('[inputs]\nshape = "1,3,8,8"\nfile = "x.pt"\n', "p2d.toml:3:1: [inputs] takes one of shape, named, file"),
])
def test_out_of_range_and_inconsistent_values(tmp_path, body, expected):
    assert error_of(tmp_path, body).startswith(expected), error_of(tmp_path, body)


# ---- precedence --------------------------------------------------------------------------------------------

RECIPE = """
    model = "prune2deploy.examples:small_resnet"
    targets = ["ort-cpu", "trt-ampere"]
    [inputs]
    named = ["input_ids:1x16:int64"]
    [prune]
    ratio = 0.3
    global = true
    ignore = ["fc"]
    [export]
    slim = false
    [benchmark]
    warmup = 2
    [gates]
    checks = ["speedup>=2"]
"""


def merged(tmp_path, argv, parser=None):
    parser = parser or build_parser()
    return merge(load_recipe(write(tmp_path, RECIPE)), parser.parse_args(argv), parser, argv)


def test_recipe_fills_what_was_not_typed(tmp_path):
    args = merged(tmp_path, ["compile", "m.pt"])
    assert (args.model, args.ratio, args.global_pruning, args.ignore) == ("m.pt", 0.3, True, ["fc"])
    assert args.input == ["input_ids:1x16:int64"] and args.input_shape is None
    assert (args.no_slim, args.warmup, args.gate) == (True, 2, ["speedup>=2"])
    assert args.targets == ["ort-cpu", "trt-ampere"] and args.target == "ort-cpu"
    assert args.sources["ratio"] == "recipe" and args.sources["model"] == "flag"
    assert args.sources["opset"] == "default" and args.opset == 18
    assert args.junit is None and args.no_step_summary is False  # schema dests exist even without a flag


def test_typed_flag_wins_even_when_it_equals_the_default(tmp_path):
    args = merged(tmp_path, ["compile", "m.pt", "--ratio", "0.5", "--local", "--ignore", "head",
                             "--target", "trt-hopper"])
    assert (args.ratio, args.global_pruning, args.ignore) == (0.5, False, ["head"])  # lists are replaced
    assert args.targets == ["trt-hopper"] and args.target == "trt-hopper"
    assert args.sources["ratio"] == args.sources["global_pruning"] == "flag"


def test_any_typed_input_flag_replaces_all_recipe_inputs(tmp_path):
    args = merged(tmp_path, ["compile", "m.pt", "--input-shape", "1,3,8,8"])
    assert args.input_shape == "1,3,8,8" and args.input is None


def test_compile_options_from_merged_args(tmp_path):
    options = compile_options(merged(tmp_path, ["compile", "m.pt", "--opset", "17"])).validate()
    assert (options.ratio, options.global_pruning, options.slim, options.opset) == (0.3, True, False, 17)
    assert (options.warmup, options.min_iters, options.ignore, options.target) == (2, 20, ["fc"], "ort-cpu")
    assert compile_options(merged(tmp_path, ["compile", "m.pt"]), "trt-ampere").target == "trt-ampere"


def future_parser() -> argparse.ArgumentParser:
    """The flags the CLI gains with recipes: optional MODEL, repeatable --target and --gate, CI switches."""
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--config")
    p.add_argument("--target", action="append")
    p.add_argument("--gate", action="append")
    p.add_argument("--junit")
    p.add_argument("--no-step-summary", action="store_true")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("-v", action="count", default=0)
    return p


def test_model_and_lists_from_recipe_with_optional_positional(tmp_path):
    args = merged(tmp_path, ["--config", "p2d.toml"], future_parser())
    assert args.model == "prune2deploy.examples:small_resnet"
    assert args.targets == ["ort-cpu", "trt-ampere"] and args.gate == ["speedup>=2"]
    args = merged(tmp_path, ["--gate", "speedup>=3", "--target", "ort-cpu", "--target", "trt", "--no-step-summary",
                             "-vv"], future_parser())
    assert args.gate == ["speedup>=3"] and args.targets == ["ort-cpu", "trt"] and args.no_step_summary is True
    assert args.v == 2


def test_no_model_anywhere_is_a_user_error():
    parser = future_parser()
    with pytest.raises(UserError, match="no model given"):
        merge(None, parser.parse_args([]), parser, [])


def test_explicit_flags_leaves_the_parser_untouched():
    parser = build_parser()
    argv = ["compile", "m.pt", "--ratio", "0.5", "--no-slim", "--ignore", "fc"]
    assert explicit_flags(parser, argv) == {"model", "ratio", "no_slim", "ignore"}
    args = parser.parse_args(["compile", "m.pt"])
    assert (args.ratio, args.no_slim, args.ignore, args.target) == (0.5, False, None, None)  # merge: ort-cpu


def test_resolved_recipe_is_recipe_shaped(tmp_path):
    resolved = resolved_recipe(merged(tmp_path, ["compile", "m.pt", "--ratio", "0.4"]))
    assert resolved["model"] == "m.pt" and resolved["targets"] == ["ort-cpu", "trt-ampere"]
    assert resolved["prune"]["ratio"] == 0.4 and resolved["prune"]["global"] is True
    assert resolved["export"]["slim"] is False and resolved["inputs"] == {"named": ["input_ids:1x16:int64"]}
    assert resolved["gates"] == {"checks": ["speedup>=2"]} and resolved["ci"] == {"step_summary": True}


def test_data_table_flags_and_options_agree(tmp_path):
    """[data] keys, their flags and CompileOptions fields: one setting each, recipe under flags."""
    recipe = load_recipe(write(tmp_path, """
        model = "m.pt"
        calib_data = "calib.npz"
        [data]
        train = "text:train.txt"
        val = "images:val"
        val_split = 0.2
        batch_size = 16
        max_length = 64
        image_size = "32,48"
        image_mean = "0.5"
        image_std = "0.25"
        metric = "cosine"
    """))
    assert recipe.options == {"calib_data": "calib.npz", "data": "text:train.txt", "val_data": "images:val",
                              "val_split": 0.2, "batch_size": 16, "max_length": 64, "image_size": "32,48",
                              "image_mean": "0.5", "image_std": "0.25", "metric": "cosine"}
    parser = build_parser()
    argv = ["compile", "--config", str(tmp_path / "p2d.toml"), "--batch-size", "8", "--metric", "top1"]
    options = compile_options(merge(recipe, parser.parse_args(argv), parser, argv)).validate()
    assert (options.batch_size, options.metric, options.max_length, options.data) == (8, "top1", 64, "text:train.txt")
    defaults = compile_options(merge(None, parser.parse_args(["compile", "m.pt"]), parser, ["compile", "m.pt"]))
    assert (defaults.data, defaults.val_split, defaults.batch_size, defaults.metric) == (None, 0.1, 32, None)
    assert error_of(tmp_path, "[data]\nval_split = 1.5\n").startswith(
        "p2d.toml:2:1: data.val_split = 1.5: val-split 1.5 is outside [0, 1)")
