"""torch-cuda backend: 2:4 eligibility and pattern checks, availability wording, the
interleaved timing loop (with a CPU timer); conversion and compile where a CUDA GPU exists."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn





from prune2deploy.backends import torch_cuda as tc
from prune2deploy.errors import MissingDependency  # noqa: E402


def _mask_2to4(linear: nn.Linear) -> nn.Linear:
    with torch.no_grad():
        w = linear.weight.reshape(linear.out_features, -1, 4)
        keep = w.abs().topk(2, dim=-1).indices
        linear.weight.copy_(torch.zeros_like(w).scatter(-1, keep, w.gather(-1, keep)).reshape_as(linear.weight))
    return linear


def test_2to4_pattern_detection():
    dense = nn.Linear(64, 32)
    assert not tc.has_2to4_pattern(dense.weight)
    assert tc.has_2to4_pattern(_mask_2to4(nn.Linear(64, 32)).weight)
    sparser = torch.zeros(8, 16)
    sparser[:, ::4] = 1.0  # 1:4 also satisfies "at most 2 of 4"
    assert tc.has_2to4_pattern(sparser)
    assert not tc.has_2to4_pattern(torch.zeros(8, 6))  # in_features not a multiple of 4


def test_semi_structured_eligibility_by_shape_and_dtype():
    assert tc.semi_structured_eligibility((3072, 768), torch.float16, "cusparselt") is None
    assert tc.semi_structured_eligibility((768, 3072), torch.bfloat16, "cutlass") is None
    reason = tc.semi_structured_eligibility((770, 768), torch.float16, "cusparselt")
    assert "out_features 770 is not a multiple of 16" in reason
    reason = tc.semi_structured_eligibility((64, 96), torch.float16, "cutlass")
    assert "in_features 96 is not a multiple of 64" in reason
    assert "not supported by cusparselt" in tc.semi_structured_eligibility((64, 64), torch.float32, "cusparselt")
    assert "2-D" in tc.semi_structured_eligibility((8, 8, 3, 3), torch.float16)


def test_limits_come_from_torch_and_match_the_documented_copy():
    for backend in ("cusparselt", "cutlass"):
        live = tc.semi_structured_limits(backend)
        for dtype, limits in tc._FALLBACK_LIMITS[backend].items():
            assert tuple(live[dtype]) == tuple(limits), (backend, dtype)


def test_linear_report_explains_each_skip():
    model = nn.Sequential(
        _mask_2to4(nn.Linear(128, 256)),  # eligible and 2:4
        nn.Linear(256, 128),  # dense weights
        _mask_2to4(nn.Linear(128, 24)),  # 24 rows: not a multiple of 16
    )
    report = {r["name"]: r for r in tc.linear_2to4_report(model, torch.float16, "cusparselt")}
    assert report["0"]["converted"] and report["0"]["reason"] is None
    assert not report["1"]["converted"] and "2:4 pattern" in report["1"]["reason"]
    assert not report["2"]["converted"] and "out_features 24" in report["2"]["reason"]


def test_availability_reason_wording():
    assert tc.availability_reason(("NVIDIA H100", (9, 0)), sparse_2to4=True) == ""
    assert tc.availability_reason(("Tesla T4", (7, 5)), sparse_2to4=False) == ""
    reason = tc.availability_reason(("Tesla T4", (7, 5)), sparse_2to4=True)
    assert "sparse tensor cores" in reason and "p2d build OUT_DIR" in reason
    no_gpu = tc.availability_reason(None)
    assert "p2d build OUT_DIR" in no_gpu and ("CPU-only" in no_gpu or "no CUDA GPU" in no_gpu)


def test_availability_here_and_prepare_refusal():
    ok, reason = tc.availability()
    if ok:
        pytest.skip("a CUDA GPU is present; the refusal path is not reachable")
    assert "p2d build OUT_DIR" in reason
    with pytest.raises(MissingDependency, match="torch-cuda"):
        tc.prepare(nn.Linear(16, 16), (torch.randn(2, 16),), sparse_2to4=True)
    with pytest.raises(MissingDependency):
        tc.benchmark({"a": lambda x: x}, (torch.randn(1),))


class _RecordingTimer:
    """CPU stand-in for the CUDA-event timer: one 1 ms sample per start()."""

    def __init__(self):
        self.samples = []

    def start(self):
        self.samples.append(1.0)

    def stop(self):
        pass

    def samples_ms(self):
        return list(self.samples)


def test_variants_are_interleaved_and_rotated():
    calls = []
    models = {name: (lambda name: lambda x: calls.append(name))(name) for name in "ABC"}
    samples = tc.interleaved_runs(models, (torch.zeros(1),), warmup=1, iters=3, make_timer=_RecordingTimer)
    assert calls[:3] == ["A", "B", "C"]  # warm-up round
    assert calls[3:] == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert {k: len(v) for k, v in samples.items()} == {"A": 3, "B": 3, "C": 3}


def test_prepare_converts_eligible_linears_on_gpu():
    ok, reason = tc.availability(sparse_2to4=True)
    if not ok:
        pytest.skip(f"needs an Ampere+ CUDA GPU: {reason}")
    torch.manual_seed(0)
    model = nn.Sequential(_mask_2to4(nn.Linear(512, 1024)), nn.ReLU(), nn.Linear(1024, 512))
    x = torch.randn(64, 512)
    dense_model, inputs, _ = tc.prepare(copy.deepcopy(model), (x,), sparse_2to4=False)
    sparse_model, _, report = tc.prepare(model, (x,), sparse_2to4=True)
    assert [r["converted"] for r in report] == [True, False]
    assert isinstance(sparse_model[0].weight, torch.sparse.SparseSemiStructuredTensor)
    with torch.no_grad():
        torch.testing.assert_close(sparse_model(*inputs), dense_model(*inputs), rtol=2e-2, atol=2e-2)
    samples = tc.benchmark({"dense": dense_model, "2:4": sparse_model}, inputs, warmup=3, iters=10)
    assert all(len(v) == 10 and min(v) > 0 for v in samples.values())
