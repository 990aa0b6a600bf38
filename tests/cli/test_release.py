"""p2d in a release pipeline: gates and exit codes, recipes, JUnit and step summary, reproducible and
cached artifacts, manifest verification, and safe failure (kill -9, concurrent writers, runaway stages)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from helpers import MODELS, assert_user_error

RESNET = f"{MODELS}:resnet_like"
ARGS = [RESNET, "--input-shape", "1,3,32,32", "--bench-seconds", "0.3", "--threads", "1"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gates_fail_with_exit_3_table_junit_and_summary(p2d, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    r = p2d("compile", *ARGS, "--out", "out", "--gate", "speedup>=1000", "--gate", "verification.max_rel_err<=1e-3",
            "--gate", "models.pruned.params<1e12", "--junit", "junit.xml", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.code == 3, r.stderr
    assert "1 of 3 gates failed: speedup>=1000" in r.stderr and "Traceback" not in r.stderr
    assert "FAIL" in r.stderr and "pass" in r.stderr  # the gate table goes to stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["gates"]["passed"] is False
    assert [g["passed"] for g in report["gates"]["results"]] == [False, True, True]
    assert "| `speedup>=1000` |" in (tmp_path / "out" / "report.md").read_text()
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite") or ET.parse(tmp_path / "junit.xml").getroot()
    cases = suite.iter("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["gate speedup>=1000"]
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "speedup>=1000" in text


@pytest.mark.slow
def test_gates_pass_exit_0(p2d, tmp_path):
    r = p2d("compile", *ARGS, "--out", "out", "--gate", "mac_reduction>=2", "--gate", "fidelity.cosine_mean>-1")
    assert r.code == 0, r.stderr


@pytest.mark.slow
def test_gate_on_missing_field_is_user_error(p2d, tmp_path):
    r = p2d("compile", *ARGS, "--out", "out", "--gate", "speedup_typo>=2")
    assert_user_error(r, "speedup_typo")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_recipe_with_flag_override(p2d, tmp_path):
    (tmp_path / "p2d.toml").write_text(f'''model = "{RESNET}"
out = "from-recipe"
[inputs]
shape = "1,3,32,32"
[prune]
ratio = 0.25
[benchmark]
seconds = 0.3
threads = 1
[gates]
checks = ["verification.max_rel_err<=1e-3"]
''')
    r = p2d("compile", "--config", "p2d.toml", "--ratio", "0.5")
    assert r.code == 0, r.stderr
    report = json.loads((tmp_path / "from-recipe" / "report.json").read_text())
    assert report["options"]["ratio"] == 0.5 and report["gates"]["passed"]
    manifest = json.loads((tmp_path / "from-recipe" / "manifest.json").read_text())
    assert manifest["recipe"]["prune"]["ratio"] == 0.5 and manifest["recipe"]["model"] == RESNET


@pytest.mark.slow
def test_several_targets_one_section_each(p2d, tmp_path):
    from prune2deploy.backends.registry import availability

    r = p2d("compile", *ARGS, "--out", "out", "--target", "ort-cpu", "--target", "trt-ampere", "--junit", "j.xml")
    ort = json.loads((tmp_path / "out" / "ort-cpu" / "report.json").read_text())
    trt = json.loads((tmp_path / "out" / "trt-ampere" / "report.json").read_text())
    assert ort["status"] == "complete" and ort["speedup"] > 0
    assert r.stdout.count(" on ort-cpu ") == 1 and r.stdout.count(" on trt-ampere ") == 1
    if not availability("trt-ampere")[0]:
        assert r.code == 2 and trt["status"] == "prepared"
    classnames = {c.get("classname") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")}
    assert classnames == {"p2d.ort-cpu", "p2d.trt-ampere"}


@pytest.mark.slow
def test_same_inputs_give_byte_identical_onnx(p2d, tmp_path):
    hashes = []
    for out in ("a", "b"):
        r = p2d("compile", *ARGS, "--out", out, "--no-cache", "--no-benchmark")
        assert r.code == 0, r.stderr
        hashes.append({n: _sha(tmp_path / out / n) for n in ("dense.onnx", "pruned.onnx")})
        manifest = json.loads((tmp_path / out / "manifest.json").read_text())
        assert manifest["artifacts"]["pruned.onnx"]["sha256"] == hashes[-1]["pruned.onnx"]
        assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert hashes[0] == hashes[1]


@pytest.mark.slow
def test_unchanged_compile_hits_cache_and_rebenchmarks(p2d, tmp_path):
    first = p2d("compile", *ARGS, "--out", "out")
    assert first.code == 0, first.stderr
    before = _sha(tmp_path / "out" / "pruned.onnx")
    second = p2d("compile", *ARGS, "--out", "out")
    assert second.code == 0, second.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cache"]["hit"] and "pruned.onnx" in report["cache"]["reused"]
    assert "prune_channels" not in report["stages_s"] and report["stages_s"]["benchmark"] > 0
    assert _sha(tmp_path / "out" / "pruned.onnx") == before
    changed = p2d("compile", *ARGS, "--out", "out", "--ratio", "0.3")
    assert not json.loads((tmp_path / "out" / "report.json").read_text())["cache"]["hit"], changed.stderr
    nocache = p2d("compile", *ARGS, "--out", "out", "--no-cache")
    assert not json.loads((tmp_path / "out" / "report.json").read_text())["cache"]["hit"], nocache.stderr


@pytest.mark.slow
def test_verify_catches_a_changed_artifact(p2d, tmp_path):
    assert p2d("compile", *ARGS, "--out", "out", "--no-benchmark").code == 0
    ok = p2d("verify", "out")
    assert ok.code == 0 and "pruned.onnx: max relative error" in ok.stdout
    data = bytearray((tmp_path / "out" / "pruned.onnx").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "out" / "pruned.onnx").write_bytes(bytes(data))
    assert_user_error(p2d("verify", "out"), "pruned.onnx", "sha256")


@pytest.mark.slow
def test_kill_9_mid_export_keeps_previous_output(p2d, tmp_path):
    assert p2d("compile", *ARGS, "--out", "out", "--no-benchmark").code == 0
    good = (tmp_path / "out" / "report.json").read_text()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "CI": "1", "P2D_CACHE_DIR": str(tmp_path / "c2")}
    proc = subprocess.Popen([sys.executable, "-m", "prune2deploy", "compile", *ARGS, "--out", "out", "--ratio", "0.3"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmpdir.glob("p2d-work-*/dense.onnx")):
        time.sleep(0.02)
    assert list(tmpdir.glob("p2d-work-*/dense.onnx")), "the compile never reached the export stage"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "out" / "report.json").read_text() == good
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [*json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"], "manifest.json"])
    again = subprocess.run([sys.executable, "-m", "prune2deploy", "compile", *ARGS, "--out", "out", "--ratio", "0.3"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["options"]["ratio"] == 0.3
    assert not list(tmpdir.glob("p2d-work-*")), "the killed compile's work directory was not cleaned up"


@pytest.mark.slow
def test_second_compile_into_same_dir_fails_at_once(tmp_path):
    env = {**os.environ, "CI": "1", "P2D_CACHE_DIR": str(tmp_path / "c")}
    cmd = [sys.executable, "-m", "prune2deploy", "compile", *ARGS, "--out", "out"]
    slow = [sys.executable, "-m", "prune2deploy", "compile", "prune2deploy.examples:small_resnet",
            "--input-shape", "1,3,64,64", "--bench-seconds", "40", "--out", "out"]  # ~45 ms a run: 40 s of timing
    first = subprocess.Popen(slow, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(15)  # the first compile holds the lock from model check to publish
        started = time.time()
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert second.returncode == 2 and "another p2d compile is writing" in second.stderr
        assert time.time() - started < 30
        assert first.poll() is None, "the first compile ended before the second started"
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()


@pytest.mark.slow
def test_runaway_stage_is_stopped_with_a_clear_line(p2d, tmp_path):
    started = time.time()
    r = p2d("compile", f"{MODELS}:stalls_in_pruning", "--input-shape", "1,3,8,8", "--out", "out",
            "--stage-timeout", "3")
    assert_user_error(r, "stage prune_channels took longer than 3 s", "--ignore")
    assert time.time() - started < 40
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_memory_ceiling_stops_the_stage(p2d, tmp_path):
    r = p2d("compile", f"{MODELS}:hogs_memory_in_pruning", "--input-shape", "1,3,8,8", "--out", "out",
            "--max-memory-gb", "2")
    assert_user_error(r, "stage prune_channels used", "2.0 GB limit")
    assert not (tmp_path / "out").exists()
