"""Release gates: parsing, evaluation against a report dict, and the exit-code contract (2 vs 3)."""
from __future__ import annotations

import pytest

from prune2deploy.errors import EXIT_GATE, EXIT_USER, GateFailed, UserError
from prune2deploy.config.values import parse_gate
from prune2deploy.report.gates import (
    evaluate, check_gate_fields, gate_markdown, gate_table, numeric_fields, raise_if_failed
)

REPORT = {
    "model": "small_resnet",
    "target": "ort-cpu",
    "speedup": 1.93,
    "mac_reduction": 3.98,
    "fidelity": {"cosine_mean": 0.88, "top1_agreement": 0.995},
    "verification": {"max_rel_err": 4.3e-07, "tolerance": 0.001, "passed": True},
    "models": {"dense": {"latency_ms": {"p50": 80.8, "p99": 113.9}},
               "pruned": {"latency_ms": {"p50": 29.2, "p99": 44.7}, "onnx_bytes": 11190045}},
    "export": {"dense": {"inputs": ["input"], "nodes": 48}},
    "skipped": None,
    "layers": [{"name": "stem.0", "out_after": 32}],
}


def test_parse_gate_all_operators_and_spacing():
    assert parse_gate("speedup>=2.5") == parse_gate(" speedup >= 2.5 ")
    gate = parse_gate("models.pruned.latency_ms.p99 <= 20")
    assert (gate.expr, gate.field, gate.op, gate.threshold) == ("models.pruned.latency_ms.p99<=20",
                                                                "models.pruned.latency_ms.p99", "<=", 20.0)
    assert [parse_gate(f"speedup{op}1").op for op in ("<", "<=", ">", ">=", "==")] == ["<", "<=", ">", ">=", "=="]
    assert parse_gate("verification.max_rel_err<=1e-3").threshold == 1e-3


@pytest.mark.parametrize("text, fragment", [
    ("speedup", "bad gate 'speedup'"),
    (">=2.5", "bad gate '>=2.5'"),
    ("speedup=>2.5", "unknown operator '=>'"),
    ("speedup=2.5", "unknown operator '='"),
    ("speedup!=2.5", "unknown operator '!='"),
    ("speedup>=fast", "threshold 'fast' is not a number"),
    ("speedup>=nan", "threshold is NaN"),
])
def test_parse_gate_rejects_with_user_error(text, fragment):
    with pytest.raises(UserError) as info:
        parse_gate(text)
    assert fragment in info.value.message
    assert info.value.exit_code == EXIT_USER


def test_evaluate_pass_and_fail():
    gates = [parse_gate(g) for g in ("speedup>=2.5", "fidelity.top1_agreement>=0.99",
                                     "verification.max_rel_err<=1e-3", "models.pruned.latency_ms.p99<=20")]
    results = evaluate(gates, REPORT)
    assert [(r.expr, r.value, r.passed) for r in results] == [
        ("speedup>=2.5", 1.93, False), ("fidelity.top1_agreement>=0.99", 0.995, True),
        ("verification.max_rel_err<=1e-3", 4.3e-07, True), ("models.pruned.latency_ms.p99<=20", 44.7, False)]
    with pytest.raises(GateFailed) as info:
        raise_if_failed(results)
    assert info.value.exit_code == EXIT_GATE
    assert info.value.message == ("2 of 4 gates failed: speedup>=2.5 (value 1.93), "
                                  "models.pruned.latency_ms.p99<=20 (value 44.7)")


def test_all_passing_raises_nothing_and_equality_is_exact():
    results = evaluate([parse_gate("mac_reduction==3.98"), parse_gate("speedup<2")], REPORT)
    assert all(r.passed for r in results)
    raise_if_failed(results)
    assert not evaluate([parse_gate("speedup>1.93")], REPORT)[0].passed


def test_list_index_segment():
    assert evaluate([parse_gate("layers.0.out_after==32")], REPORT)[0].passed


@pytest.mark.parametrize("gate, fragments", [
    ("spedup>=2", ["report field 'spedup' does not exist", "numeric fields include speedup"]),
    ("models.pruned.latency_ms.p98<=20", ["does not exist", "models.pruned.latency_ms.p99"]),
    ("p99<=20", ["does not exist", "models.dense.latency_ms.p99, models.pruned.latency_ms.p99"]),
    ("verification.passed==1", ["is a boolean (true), not a number"]),
    ("skipped<=1", ["is null"]),
    ("model>=1", ["is a string ('small_resnet')"]),
    ("models.pruned.latency_ms>=1", ["is a table", "models.pruned.latency_ms.p50"]),
])
def test_missing_or_non_numeric_field_is_user_error_not_gate_failure(gate, fragments):
    gates = [parse_gate("speedup>=0"), parse_gate(gate)]
    for call in (check_gate_fields, evaluate):
        with pytest.raises(UserError) as info:
            call(gates, REPORT)
        assert not isinstance(info.value, GateFailed)
        text = info.value.one_line()
        for fragment in fragments:
            assert fragment in text, text


def test_numeric_fields_skips_bools_strings_and_nulls():
    fields = numeric_fields(REPORT)
    assert fields["models.pruned.onnx_bytes"] == 11190045.0
    assert fields["layers.0.out_after"] == 32.0
    assert "verification.passed" not in fields and "model" not in fields and "skipped" not in fields


def test_table_and_markdown():
    results = evaluate([parse_gate("speedup>=2.5"), parse_gate("mac_reduction>=3")], REPORT)
    assert gate_table(results).splitlines() == [
        "gate              value  result",
        "----------------  -----  ------",
        "speedup>=2.5      1.93   FAIL",
        "mac_reduction>=3  3.98   pass",
    ]
    md = gate_markdown(results)
    assert md.startswith("### Gates: 1 of 2 passed\n")
    assert "| `speedup>=2.5` | 1.93 | **FAIL** |" in md
    assert "| `mac_reduction>=3` | 3.98 | pass |" in md
