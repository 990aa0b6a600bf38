"""The torch models wait on disk while only ONNX files run (verification, benchmark), and come back intact, or
are freed when the caller wants them back (the CLI's last target); MACs are counted without a second copy of
the weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

import prune2deploy
import json

from helpers import MODELS
from models import resnet_like, transformer_like
from prune2deploy.context import ExampleInputs
from prune2deploy.backends.ort_cpu.driver import OrtCpuDriver
from prune2deploy.model.facts import count_macs_params
from prune2deploy.artifacts.parking import PARK_FILE, TensorParking, parking
from prune2deploy.pipeline import Output

FAST = dict(bench_seconds=0.3, threads=1, min_iters=3, warmup=1, target="ort-cpu")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight  # tied, as in language models

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids).mean(1)))


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _watch_benchmark(monkeypatch, model) -> dict:
    """What the benchmark sees: how many dense elements are in memory, whether a park file exists."""
    seen = {}
    benchmark = OrtCpuDriver.benchmark

    def spy(self, artifacts, inputs, opts, progress):
        seen["dense_elements"] = sum(p.numel() for p in model.parameters())
        seen["park_file"] = any(p.name == PARK_FILE for p in artifacts["dense.onnx"].parent.iterdir())
        return benchmark(self, artifacts, inputs, opts, progress)

    monkeypatch.setattr(OrtCpuDriver, "benchmark", spy)
    return seen


def test_park_empties_tensors_in_place_and_restore_brings_back_the_same_values(tmp_path):
    model = Tied()
    model.norm.running_mean.uniform_()
    before, weight = _state(model), model.embed.weight
    spot = TensorParking(tmp_path / PARK_FILE)
    spot.park(model, model)  # a model named twice is parked once
    assert (tmp_path / PARK_FILE).exists()
    assert all(t.numel() == 0 for t in [*model.parameters(), model.norm.running_mean])
    spot.restore()
    assert not (tmp_path / PARK_FILE).exists()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.embed.weight is weight and model.head.weight is model.embed.weight  # identity and tying kept
    assert model.embed.weight.requires_grad
    assert model(torch.randint(0, 50, (2, 5))).shape == (2, 50)


def test_restored_after_an_error_inside_the_block(tmp_path):
    model = resnet_like()
    before = _state(model)
    try:
        with parking(tmp_path / PARK_FILE) as spot:
            spot.park(model)
            raise RuntimeError("verification failed")
    except RuntimeError:
        pass
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_file_that_cannot_be_written_parks_nothing(tmp_path):
    model = resnet_like()
    spot = TensorParking(tmp_path / "missing-dir" / PARK_FILE)
    spot.park(model)
    assert spot.failed and "stayed in memory" in spot.failed
    assert all(p.numel() > 0 for p in model.parameters())
    spot.restore()  # nothing to do


def test_compile_benchmarks_with_the_torch_models_parked_and_returns_them_intact(tmp_path, monkeypatch):
    model = resnet_like()
    before = _state(model)
    seen = _watch_benchmark(monkeypatch, model)
    result = prune2deploy.compile(model, torch.randn(1, 3, 32, 32), out_dir=tmp_path / "out",
                                  **FAST, output=Output(use_cache=False))
    assert seen == {"dense_elements": 0, "park_file": True}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert result.pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)  # the returned pruned model runs
    assert not (tmp_path / "out" / PARK_FILE).exists()
    assert {"park", "unpark"} <= set(result.report["stages_s"])
    assert result.report["verification"]["passed"]


def test_release_frees_the_tensors_without_writing_them(tmp_path):
    model = Tied()
    spot = TensorParking(tmp_path / PARK_FILE, keep=False)
    spot.park(model)
    assert spot.released and not spot.tensors and not (tmp_path / PARK_FILE).exists()
    assert all(t.numel() == 0 for t in [*model.parameters(), *model.buffers()])
    spot.restore()  # nothing comes back
    assert all(p.numel() == 0 for p in model.parameters())


def test_compile_without_keep_models_frees_them_and_returns_none(tmp_path, monkeypatch):
    model = resnet_like()
    seen = _watch_benchmark(monkeypatch, model)
    result = prune2deploy.compile(model, torch.randn(1, 3, 32, 32), out_dir=tmp_path / "out", **FAST,
        output=Output(use_cache=False, keep_models=False))
    assert seen == {"dense_elements": 0, "park_file": False}
    assert result.dense is None and result.pruned is None
    stages = set(result.report["stages_s"])
    assert "release" in stages and not {"park", "unpark"} & stages
    assert result.report["verification"]["passed"] and result.report["speedup"] > 0
    pruned = torch.load(tmp_path / "out" / "pruned.pt", weights_only=False)  # written by this test's compile
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_cli_parks_for_every_target_but_the_last_and_frees_there(p2d_in_process, tmp_path):
    r = p2d_in_process("compile", f"{MODELS}:resnet_like", "--trust", str(MODELS), "--input-shape", "1,3,32,32",
                       "--out", "multi", "--no-cache", "--bench-seconds", "0.3", "--threads", "1",
                       "--target", "ort-cpu", "--target", "trt-ampere")
    assert r.code in (0, 2), r.stderr  # 2: TensorRT is not installed here (that target is prepared)
    first, last = (json.loads((tmp_path / "multi" / t / "report.json").read_text())
                   for t in ("ort-cpu", "trt-ampere"))
    assert {"park", "unpark"} <= set(first["stages_s"]) and "release" not in first["stages_s"]
    assert "release" in last["stages_s"] and "park" not in last["stages_s"]
    assert last["verification"]["passed"]  # the second target got the model back intact from the first
    assert last["models"]["dense"]["params"] == first["models"]["dense"]["params"] > 0


def test_macs_counted_like_torch_pruning_without_touching_the_model():
    for model, inputs in ((resnet_like(), ExampleInputs((torch.randn(1, 3, 32, 32),), {})),
                          (transformer_like(), ExampleInputs((torch.randint(0, 100, (1, 16)),), {}))):
        expected = tp.utils.count_ops_and_params(model, inputs.args)
        assert count_macs_params(model, inputs) == (int(expected[0]), int(expected[1]))
        assert not any(hasattr(m, "__flops__") for m in model.modules())
        assert not any(m._forward_hooks for m in model.modules())


def test_magnitude_importance_matches_torch_pruning_in_slices_or_whole(monkeypatch):
    from prune2deploy.passes import importance

    for model, x in ((resnet_like(), torch.randn(1, 3, 32, 32)), (transformer_like(), torch.randint(0, 100, (1, 16)))):
        groups = list(tp.DependencyGraph().build_dependency(model, x).get_all_groups())
        for p in (1, 2):
            theirs = [tp.importance.GroupMagnitudeImportance(p=p)(g) for g in groups]
            whole = [importance.MagnitudeImportance(p=p)(g) for g in groups]
            monkeypatch.setattr(importance, "SLICE_BYTES", 512)  # every layer in many slices
            sliced = [importance.MagnitudeImportance(p=p)(g) for g in groups]
            monkeypatch.undo()
            assert [a is None for a in theirs] == [a is None for a in whole] == [a is None for a in sliced]
            pairs = [(a, b, c) for a, b, c in zip(theirs, whole, sliced) if a is not None]
            assert len(pairs) >= 4
            assert all(torch.equal(a, b) for a, b, _ in pairs)  # one slice: the same arithmetic
            assert all(torch.allclose(a, c, rtol=1e-5, atol=0) for a, _, c in pairs)
