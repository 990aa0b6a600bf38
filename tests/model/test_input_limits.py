"""Input sizes: an example input too large for this machine is refused before it is allocated (fast, one line),
and data whose image-like samples have another height and width than the example input is a user error;
token sequences of other lengths, and data of several sizes, still load."""
from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import torch

from helpers import MODELS, assert_user_error
from models import digits_cnn
from prune2deploy.config.options import CompileOptions
from prune2deploy.context import ExampleInputs
from prune2deploy.data.load import load_data
from prune2deploy.errors import UserError
from prune2deploy.model.inputs import (INPUT_SETS_HELD, MAX_ELEMENTS, build_example_inputs, check_input_size,
                                       memory_bytes)

RESNET = f"{MODELS}:resnet_like"
GB = 10**9


@pytest.mark.skipif((memory_bytes() or 0) >= 4.8 * GB * INPUT_SETS_HELD * 4,
                    reason="a machine this large takes a 4.8 GB input")
def test_huge_input_shape_is_refused_fast_through_the_cli(p2d, tmp_path):
    started = time.perf_counter()
    r = p2d("compile", RESNET, "--input-shape", "1,3,20000,20000", "--out", "out", timeout=120)
    elapsed = time.perf_counter() - started
    assert_user_error(r, "--input-shape 1,3,20000,20000", "4.8 GB")
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


def test_more_values_than_one_input_may_hold_is_refused_whatever_the_memory():
    with pytest.raises(UserError) as info:
        check_input_size([("--input-shape 1,3,30000,30000", (1, 3, 30000, 30000), torch.float32)], memory=10**15)
    line = info.value.one_line()
    assert "2,700,000,000 values" in line and "10.8 GB as float32" in line and "2**31" in line
    check_input_size([("ok", (MAX_ELEMENTS,), torch.float32)], memory=10**15)  # exactly at the limit: taken


def test_memory_limit_counts_the_input_sets_a_compile_holds():
    shape = (1, 3, 1000, 1000)  # 12 MB as float32
    size = 12 * 10**6
    check_input_size([("x", shape, torch.float32)], memory=size * INPUT_SETS_HELD * 4)  # exactly a quarter
    with pytest.raises(UserError) as info:
        check_input_size([("--input-shape 1,3,1000,1000", shape, torch.float32)],
                         memory=size * INPUT_SETS_HELD * 4 - 1)
    line = info.value.one_line()
    assert "--input-shape 1,3,1000,1000 is 12.0 MB" in line and "more than a quarter" in line
    with pytest.raises(UserError, match="the example inputs is 24.0 MB"):  # several inputs count together
        check_input_size([("a", shape, torch.float32), ("b", shape, torch.float32)],
                         memory=size * INPUT_SETS_HELD * 4)


def test_named_inputs_are_checked_before_allocating():
    started = time.perf_counter()
    with pytest.raises(UserError) as info:
        build_example_inputs(digits_cnn(), inputs=["input_ids:1x3000000000:int64"])
    assert "--input input_ids:1x3000000000:int64" in info.value.one_line() and "24.0 GB as int64" in \
        info.value.one_line()
    assert time.perf_counter() - started < 5
    assert build_example_inputs(digits_cnn(), "1,1,8,8").args[0].shape == (1, 1, 8, 8)


# --- data of another size --------------------------------------------------------------------------

EXAMPLE = ExampleInputs((torch.zeros(1, 1, 8, 8),), {})


def _error(spec, example=EXAMPLE, model=None, **options) -> str:
    with pytest.raises(UserError) as info:
        load_data(str(spec), model or digits_cnn(), example, CompileOptions(**options))
    return info.value.one_line()


def test_images_of_another_size_are_refused_naming_both_shapes(tmp_path):
    torch.save(torch.randn(10, 1, 17, 5), tmp_path / "small.pt")
    line = _error(tmp_path / "small.pt")
    assert "samples of shape [1, 17, 5] (HxW 17x5)" in line and "the example input is [1, 1, 8, 8] (HxW 8x8)" in line
    assert "--input-shape 1,1,17,5" in line and "--image-size" in line
    np.savez(tmp_path / "big.npz", inputs=np.zeros((4, 1, 16, 16), dtype=np.float32))
    assert "HxW 16x16" in _error(tmp_path / "big.npz")


def test_images_of_another_size_through_the_cli(p2d, tmp_path):
    torch.save(torch.randn(8, 3, 17, 5), tmp_path / "small.pt")
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--data", "small.pt", "--out", "out")
    assert_user_error(r, "--data small.pt", "[3, 17, 5]", "[1, 3, 32, 32]")
    assert not (tmp_path / "out").exists()


def test_token_sequences_of_other_lengths_and_several_sizes_still_load(tmp_path):
    from models import transformer_like

    example = ExampleInputs((), {"tokens": torch.zeros(1, 16, dtype=torch.int64)})
    torch.save({"inputs": {"tokens": torch.randint(0, 100, (6, 10))}}, tmp_path / "short.pt")
    batches = load_data(str(tmp_path / "short.pt"), transformer_like(), example, CompileOptions())
    assert batches[0][0].kwargs["tokens"].shape == (6, 10)
    path = tmp_path / "sizes.py"
    path.write_text(textwrap.dedent("""
        import torch

        def several():  # a fully convolutional model fed several sizes on purpose
            return [torch.zeros(2, 1, s, s) for s in (8, 12, 16)]
    """))
    batches = load_data(f"{path}:several", digits_cnn(), EXAMPLE, CompileOptions())
    assert sorted(b.tensors()[0].shape[2] for b, _ in batches) == [8, 12, 16]
