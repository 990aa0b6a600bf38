"""Target cpu (the default): the dense model timed on each CPU runtime at its own precision, the fastest deploys,
leaving ONNX Runtime only with a clear margin; the choice is in the report and survives a cache hit."""
from __future__ import annotations

import torch

from models import resnet_like

from prune2deploy.backends.cpu import driver as cpu
from prune2deploy.backends.registry import TARGETS


def test_cpu_is_the_default_target():
    from prune2deploy.config.options import CompileOptions

    assert CompileOptions().target == "cpu" and next(iter(TARGETS)) == "cpu"


def test_onnx_runtime_stays_unless_another_runtime_is_clearly_faster():
    names = ["ort-cpu", "ov-cpu"]
    assert cpu._pick({"ort-cpu": 10.0, "ov-cpu": 9.0}, names) == "ort-cpu"  # 1.11x: inside the margin
    assert cpu._pick({"ort-cpu": 10.0, "ov-cpu": 8.0}, names) == "ov-cpu"  # 1.25x
    assert cpu._pick({"ort-cpu": 5.0, "ov-cpu": 9.0}, names) == "ort-cpu"
    assert cpu._pick({}, ["ov-cpu"]) == "ov-cpu"  # one runtime: nothing to time


def test_the_choice_is_measured_reported_and_restored_from_the_cache(tmp_path):
    from prune2deploy.pipeline import Output, compile

    model, example = resnet_like(), torch.randn(1, 3, 32, 32)
    fast = dict(bench_seconds=0.3, min_iters=3, warmup=1, ratio=0.5)
    report = compile(model, example, out_dir=tmp_path / "a", output=Output(cache_dir=tmp_path / "cache"),
                     **fast).report
    choice = report["runtime_choice"]
    assert report["target"] == "cpu" and set(choice["runtimes"]) == {"ort-cpu", "ov-cpu"}
    timings = {name: r["dense_p50_ms"] for name, r in choice["runtimes"].items()}
    assert choice["chosen"] == cpu._pick(timings, list(timings)) and choice["margin"] == cpu.MARGIN
    assert choice["runtimes"]["ort-cpu"]["precision"] == "fp32"
    chosen = choice["chosen"]
    backend = {"ort-cpu": "onnxruntime", "ov-cpu": "openvino"}[chosen]
    assert report["benchmark"]["settings"]["backend"] == backend and chosen in report["precision"]["why"]
    assert report["precision"]["deployed"] == choice["runtimes"][chosen]["precision"]
    other = ({"ort-cpu", "ov-cpu"} - {chosen}).pop()
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert not any(name.endswith((".xml", ".int8.onnx")) for name in files) if chosen == "ort-cpu" else \
        {"dense.bf16.xml", "pruned.bf16.xml"} <= files or {"dense.fp32.xml", "pruned.fp32.xml"} <= files
    again = compile(model, example, out_dir=tmp_path / "b", output=Output(cache_dir=tmp_path / "cache"), **fast).report
    assert again["cache"]["hit"] and again["runtime_choice"]["chosen"] == chosen != other
    assert again["benchmark"]["settings"]["backend"] == backend


def test_p2d_targets_lists_cpu_first_with_both_runtimes(p2d_in_process):
    r = p2d_in_process("targets")
    first = r.stdout.splitlines()[0]
    assert first.startswith("cpu ") and "(default)" in first
    assert "ort-cpu" in r.stdout and "ov-cpu" in r.stdout
    lines = r.stdout.splitlines()
    ov = next(i for i, line in enumerate(lines) if line.startswith("ov-cpu "))
    assert lines[ov + 2].strip().startswith("precisions here: fp32") and "int8" in lines[ov + 2]
    ort = next(i for i, line in enumerate(lines) if line.startswith("ort-cpu "))
    assert "auto: fp32" in lines[ort + 2]
