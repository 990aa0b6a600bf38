"""2:4 on torch-cuda decided by measurement: eligibility and GEMM shapes on a CPU, and the decision rule on
recorded timings (keeps only the faster layers, respects the margin, reports every layer with both times,
never ships a model slower than its dense-weight twin)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prune2deploy.backends.torch_cuda import semi_structured as ss
from prune2deploy.passes.nm import nm_mask

# Recorded on an H100 (issue 10, torch 2.11+cu130, cuSPARSELt 0.8, fp16): one Linear 4096x768x3072
# dense 0.056 ms vs 1.156 ms semi-structured; CUTLASS refuses sm_90.
H100_REFUSAL = "RuntimeError: CUTLASS semi-structured kernels are not supported on sm_90"
QKV = ss.GemmShape(4096, 768, 768, True)
FC1 = ss.GemmShape(4096, 768, 3072, True)
FC2 = ss.GemmShape(4096, 3072, 768, True)


def masked(linear: nn.Linear) -> nn.Linear:
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight, 2, 4))
    return linear


def candidate(name, shape, backends=("cusparselt", "cutlass"), reason=None):
    return {"name": name, "shape": [shape.n, shape.k], "backends": list(backends) if reason is None else [],
            "reason": reason}


class Recorded:
    """measure(shape, kinds) from a table of recorded timings; counts the calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, shape, kinds):
        self.calls.append((shape, kinds))
        return {kind: self.table[shape][kind] for kind in kinds}


def test_keeps_only_layers_faster_by_the_margin_and_reports_every_layer():
    table = {
        QKV: {"dense": 0.020, "cusparselt": 0.0195, "cutlass": H100_REFUSAL},  # 1.03x: under the 5% margin
        FC1: {"dense": 0.100, "cusparselt": 0.080, "cutlass": 0.090},  # 1.25x with cuSPARSELt
        FC2: {"dense": 0.056, "cusparselt": 1.156, "cutlass": H100_REFUSAL},  # the H100's 0.05x
    }
    candidates = [candidate("l0.q", QKV), candidate("l0.fc1", FC1), candidate("l0.fc2", FC2),
                  candidate("l1.q", QKV), candidate("head", ss.GemmShape(32, 768, 10, True), reason="out_features 10")]
    shapes = {"l0.q": QKV, "l0.fc1": FC1, "l0.fc2": FC2, "l1.q": QKV}
    measure = Recorded(table)
    result = ss.decide(candidates, shapes, measure, margin=0.05)
    by_name = {d["name"]: d for d in result["decisions"]}

    assert [d["name"] for d in result["decisions"]] == ["l0.q", "l0.fc1", "l0.fc2", "l1.q", "head"]
    assert result["kept"] == ["l0.fc1"] and result["semi_structured_layers"] == 1 and result["timed_layers"] == 4
    fc1 = by_name["l0.fc1"]
    assert fc1["decision"] == "2:4" and fc1["backend"] == "cusparselt" and fc1["speedup"] == pytest.approx(1.25)
    assert fc1["dense_ms"] == 0.100 and fc1["sparse_ms"] == {"cusparselt": 0.080, "cutlass": 0.090}
    fc2 = by_name["l0.fc2"]
    assert fc2["decision"] == "dense" and fc2["dense_ms"] == 0.056 and fc2["sparse_ms"] == {"cusparselt": 1.156}
    assert fc2["refused"] == {"cutlass": H100_REFUSAL} and "0.05x" in fc2["reason"]
    assert by_name["l0.q"]["decision"] == "dense" and "not the 5% faster needed" in by_name["l0.q"]["reason"]
    assert by_name["head"] == {"name": "head", "shape": [10, 768], "decision": "dense", "reason": "out_features 10"}
    assert result["summary"] == "2:4 on 1 of 4 timed Linear layers (cusparselt)"
    assert len(measure.calls) == 3  # the two q layers share one GEMM shape: timed once


def test_margin_decides_the_close_calls():
    table = {QKV: {"dense": 0.020, "cusparselt": 0.0195}}
    candidates, shapes = [candidate("q", QKV, ("cusparselt",))], {"q": QKV}
    assert ss.decide(candidates, shapes, Recorded(table), margin=0.05)["kept"] == []
    assert ss.decide(candidates, shapes, Recorded(table), margin=0.02)["kept"] == ["q"]
    assert ss.decide(candidates, shapes, Recorded(table), margin=0.0)["kept"] == ["q"]
    slower = {QKV: {"dense": 0.020, "cusparselt": 0.021}}
    assert ss.decide(candidates, shapes, Recorded(slower), margin=0.0)["kept"] == []


def test_no_layer_faster_says_so_plainly():
    table = {FC1: {"dense": 0.056, "cusparselt": 1.156, "cutlass": H100_REFUSAL}}
    result = ss.decide([candidate("fc1", FC1)], {"fc1": FC1}, Recorded(table))
    assert result["summary"] == ss.NO_LAYER_FASTER == "2:4 kept dense on this GPU: no layer faster"
    assert result["kept"] == [] and result["decisions"][0]["decision"] == "dense"


def test_every_kernel_refused_and_nothing_eligible():
    table = {FC1: {"dense": 0.05, "cusparselt": "RuntimeError: no cuSPARSELt", "cutlass": H100_REFUSAL}}
    result = ss.decide([candidate("fc1", FC1), candidate("unused", FC2)], {"fc1": FC1}, Recorded(table))
    fc1, unused = result["decisions"]
    assert fc1["decision"] == "dense" and "no semi-structured kernel ran" in fc1["reason"] and "sm_90" in fc1["reason"]
    assert unused["reason"] == "not called with the example inputs" and "dense_ms" not in unused
    only_ineligible = ss.decide([candidate("head", FC1, reason="weights do not hold the 2:4 pattern")], {},
                                Recorded({}))
    assert only_ineligible["summary"].startswith("2:4 kept dense: no Linear layer can hold")


def _decided_one_layer():
    table = {FC1: {"dense": 0.100, "cusparselt": 0.080}}
    return ss.decide([candidate("fc1", FC1, ("cusparselt",))], {"fc1": FC1}, Recorded(table))


def test_whole_model_slower_than_its_dense_weight_twin_reverts_every_layer():
    sparse, twin = {"p50": 2.0, "cv": 0.01}, {"p50": 1.9, "cv": 0.01}
    result, shipped = ss.whole_model_check(_decided_one_layer(), sparse, twin)
    assert shipped is twin and result["kept"] == [] and result["semi_structured_layers"] == 0
    assert result["decisions"][0]["decision"] == "dense" and "reverted" in result["decisions"][0]["reason"]
    assert result["whole_model"] == {"semi_structured_p50_ms": 2.0, "dense_weights_p50_ms": 1.9,
                                     "speedup": pytest.approx(0.95), "kept": False}
    assert result["summary"].startswith("2:4 kept dense on this GPU: reverted")


def test_whole_model_faster_keeps_the_decisions():
    sparse, twin = {"p50": 1.5}, {"p50": 1.9}
    result, shipped = ss.whole_model_check(_decided_one_layer(), sparse, twin)
    assert shipped is sparse and result["kept"] == ["fc1"] and result["whole_model"]["kept"] is True


def test_gemm_shapes_are_the_real_call_shapes():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8, bias=False))
    shapes = ss.linear_gemm_shapes(model, (torch.randn(2, 5, 16),))
    assert shapes == {"0": ss.GemmShape(10, 16, 32, True), "2": ss.GemmShape(10, 32, 8, False)}
    assert str(shapes["0"]) == "10x16x32"
    assert not model[0]._forward_hooks  # hooks removed


def test_candidates_name_the_backends_that_accept_each_layer():
    model = nn.Sequential(masked(nn.Linear(64, 128)), masked(nn.Linear(128, 48)), nn.Linear(48, 64),
                          masked(nn.Linear(64, 24)))
    report = {r["name"]: r for r in ss.linear_candidates(model, torch.float16)}
    assert report["0"]["backends"] == ["cusparselt", "cutlass"] and report["0"]["reason"] is None
    assert report["1"]["backends"] == ["cusparselt"]  # 48 rows: not a multiple of CUTLASS's 32
    assert not report["2"]["backends"] and "2:4 pattern" in report["2"]["reason"]
    assert not report["3"]["backends"] and "out_features 24" in report["3"]["reason"]


def test_2to4_pattern_detection():
    assert not ss.has_2to4_pattern(nn.Linear(64, 32).weight)
    assert ss.has_2to4_pattern(masked(nn.Linear(64, 32)).weight)
    sparser = torch.zeros(8, 16)
    sparser[:, ::4] = 1.0  # 1:4 also satisfies "at most 2 of 4"
    assert ss.has_2to4_pattern(sparser)
    assert not ss.has_2to4_pattern(torch.zeros(8, 6))  # in_features not a multiple of 4


def test_semi_structured_eligibility_by_shape_and_dtype():
    assert ss.semi_structured_eligibility((3072, 768), torch.float16, "cusparselt") is None
    assert ss.semi_structured_eligibility((768, 3072), torch.bfloat16, "cutlass") is None
    assert "out_features 770 is not a multiple of 16" in ss.semi_structured_eligibility((770, 768), torch.float16)
    assert "in_features 96 is not a multiple of 64" in ss.semi_structured_eligibility((64, 96), torch.float16, "cutlass")
    assert "not supported by cusparselt" in ss.semi_structured_eligibility((64, 64), torch.float32, "cusparselt")
    assert "2-D" in ss.semi_structured_eligibility((8, 8, 3, 3), torch.float16)


def test_limits_come_from_torch_and_match_the_documented_copy():
    for backend in ss.BACKENDS:
        live = ss.semi_structured_limits(backend)
        for dtype, limits in ss._FALLBACK_LIMITS[backend].items():
            assert tuple(live[dtype]) == tuple(limits), (backend, dtype)
