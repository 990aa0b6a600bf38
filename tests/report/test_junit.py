"""JUnit XML for CI test reporters and the GitHub step summary."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from prune2deploy.errors import UserError
from prune2deploy.config.values import parse_gate
from prune2deploy.report.gates import evaluate
from prune2deploy.report.junit import append_step_summary, write_junit, write_junit_runs

REPORT = {
    "p2d_version": "0.1.0", "model": "small_resnet", "target": "ort-cpu", "device": "AMD EPYC, 2 cores",
    "speedup": 1.93, "mac_reduction": 3.98, "wall_s": 25.3,
    "verification": {"max_rel_err": 4.3e-07, "tolerance": 0.001, "passed": True, "worst_model": "pruned",
                     "worst_output": "output"},
}


def _results(report, *gates):
    return evaluate([parse_gate(g) for g in gates], report)


def test_junit_cases_failures_and_properties(tmp_path):
    path = tmp_path / "ci" / "p2d-junit.xml"
    write_junit(path, REPORT, _results(REPORT, "speedup>=2.5", "mac_reduction>=3"))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "p2d"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("time")) == ("3", "1", "0",
                                                                                                   "25.300")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["model"] == "small_resnet" and props["target"] == "ort-cpu"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["verification", "gate speedup>=2.5", "gate mac_reduction>=3"]
    assert {c.get("classname") for c in cases.values()} == {"p2d.ort-cpu"}
    assert cases["verification"].find("failure") is None
    assert "max_rel_err 4.3e-07 vs tolerance 0.001" in cases["verification"].find("system-out").text
    failure = cases["gate speedup>=2.5"].find("failure")
    assert failure.get("message") == "speedup = 1.93, needs >= 2.5" and failure.get("type") == "GateFailed"
    assert cases["gate mac_reduction>=3"].find("failure") is None
    assert [p.name for p in path.parent.iterdir()] == ["p2d-junit.xml"]  # no temp file left behind


def test_failed_verification_is_a_failure_and_missing_is_skipped(tmp_path):
    bad = {**REPORT, "verification": {"max_rel_err": 0.05, "tolerance": 0.001, "passed": False}}
    write_junit(tmp_path / "a.xml", bad, [])
    case = ET.parse(tmp_path / "a.xml").getroot().find("testsuite/testcase")
    assert case.find("failure").get("message") == "max_rel_err 0.05 vs tolerance 0.001"
    none = {k: v for k, v in REPORT.items() if k != "verification"}
    write_junit(tmp_path / "b.xml", none, [])
    suite = ET.parse(tmp_path / "b.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "1" and suite.find("testcase/skipped") is not None


def test_several_targets_in_one_suite(tmp_path):
    trt = {**REPORT, "target": "trt-ampere", "speedup": 3.1}
    write_junit_runs(tmp_path / "j.xml", [(REPORT, _results(REPORT, "speedup>=2.5")),
                                          (trt, _results(trt, "speedup>=2.5"))])
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["target"] == "ort-cpu, trt-ampere"
    failed = [c.get("classname") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["p2d.ort-cpu"]


def test_overwrite_replaces_previous_p2d_file_only(tmp_path):
    path = tmp_path / "j.xml"
    write_junit(path, REPORT, _results(REPORT, "speedup>=2.5"))
    write_junit(path, REPORT, [])  # p2d wrote it (its written_by property): replaced
    assert ET.parse(path).getroot().find("testsuite").get("tests") == "1"
    theirs = tmp_path / "theirs.xml"
    theirs.write_text('<?xml version="1.0"?><testsuites name="p2d"><testsuite name="p2d"/></testsuites>\n')
    with pytest.raises(UserError, match="exists and is not a JUnit file p2d wrote"):
        write_junit(theirs, REPORT, [])
    assert theirs.read_text().startswith('<?xml version="1.0"?><testsuites name="p2d">')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.xml", "theirs.xml"]


def test_step_summary_only_when_env_set(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert append_step_summary("### Gates") is False
    assert os.listdir(tmp_path) == []
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_step_summary("### Gates: 1 of 1 passed") is True
    assert append_step_summary("second\n") is True
    assert summary.read_text() == "earlier step\n### Gates: 1 of 1 passed\nsecond\n"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing-dir" / "s.md"))
    assert append_step_summary("x") is False
