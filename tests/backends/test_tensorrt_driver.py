"""--target trt-ampere / torch-cuda on a machine without TensorRT or a GPU: every step that needs neither
runs, its artifacts are left verified, and the compile stops with exit 2 and one line saying how to finish."""
from __future__ import annotations

import json

import onnx
import pytest

from helpers import MODELS, assert_user_error

RESNET = f"{MODELS}:resnet_like"


def _have_trt() -> bool:
    from prune2deploy.backends.registry import availability

    return availability("trt-ampere")[0]


def _prepare(run, tmp_path):
    if _have_trt():
        pytest.skip("TensorRT and a GPU are present: this test covers the machine without them")
    r = run("compile", RESNET, "--input-shape", "1,3,32,32", "--target", "trt-ampere", "--sparsity", "2:4",
            "--out", "out")
    return r, tmp_path / "out"


@pytest.fixture
def prepared(p2d, tmp_path):
    """The compile through a fresh process: its exit code and stderr are what is checked."""
    return _prepare(p2d, tmp_path)


@pytest.fixture
def prepared_in_process(p2d_in_process, tmp_path):
    """The same compile in this process, where only the artifacts it leaves matter."""
    return _prepare(p2d_in_process, tmp_path)


@pytest.mark.slow
def test_stops_with_exit_2_and_how_to_finish(prepared):
    r, out = prepared
    assert_user_error(r, "TensorRT is not installed", f"p2d build {out.name}")


@pytest.mark.slow
def test_prepared_artifacts_are_verified(prepared_in_process, p2d_in_process):
    _, out = prepared_in_process
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "prepared" and report["target"] == "trt-ampere"
    for name in ("dense", "pruned", "pruned_2to4"):
        fp32, fp16 = onnx.load(str(out / f"{name}.onnx")), onnx.load(str(out / f"{name}.fp16.onnx"))
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
        assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp32.graph.initializer)
    v = report["verification"]
    assert v["passed"] and v["fp16"]["passed"] and v["fp16"]["max_rel_err"] < 5e-2
    checks = report["sparsity_check"]
    assert set(checks) == {"pruned_2to4.onnx", "pruned_2to4.fp16.onnx"}
    assert all(c["held"] == c["layers"] > 0 for c in checks.values())
    assert report["passes"]["sparsity"]["skipped"][0]["name"] == "stem.0"  # 3 input channels: not eligible
    plan = json.loads((out / "build_plan.json").read_text())["models"]
    assert plan["pruned_2to4"]["plan"]["builder_flags"] == ["SPARSE_WEIGHTS"]
    assert plan["pruned"]["plan"]["builder_flags"] == []
    assert plan["dense"]["plan"]["hardware_compatibility_level"] == "AMPERE_PLUS"
    assert all(layer["out_after"] % 16 == 0 for layer in report["layers"]
               if layer["out_after"] != layer["out_before"])  # aligned for sparse kernels
    r = p2d_in_process("verify", "out")
    assert r.code == 0, r.stderr
    assert "pruned_2to4.fp16.onnx" in r.stdout


@pytest.mark.slow
def test_build_without_tensorrt(prepared_in_process, p2d):
    r = p2d("build", "out")
    assert_user_error(r, "TensorRT is not installed")


@pytest.mark.slow
def test_torch_cuda_without_gpu(p2d, tmp_path):
    from prune2deploy.backends.registry import availability

    if availability("torch-cuda")[0]:
        pytest.skip("a CUDA GPU is present")
    r = p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--target", "torch-cuda", "--out", "out")
    assert_user_error(r, "torch-cuda", "CUDA")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verification"]["passed"]


def test_targets_lists_reasons(p2d_in_process):
    r = p2d_in_process("targets")
    assert r.code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("cpu ") and " yes " in lines[0] and "(default)" in lines[0]
    assert any(line.startswith("ort-cpu ") and " yes " in line for line in lines)
    if not _have_trt():
        row = next(i for i, line in enumerate(lines) if line.startswith("trt-ampere"))
        assert " no " in lines[row] and "TensorRT is not installed" in lines[row + 1]


@pytest.mark.slow
def test_dynamic_batch_gives_dynamic_onnx_and_a_profile(p2d, tmp_path):
    if _have_trt():
        pytest.skip("TensorRT and a GPU are present: this test covers the machine without them")
    r = p2d("compile", RESNET, "--input-shape", "2,3,32,32", "--target", "trt-hopper", "--dynamic-batch", "1,4,16",
            "--out", "out")
    assert_user_error(r, "TensorRT is not installed")
    graph = onnx.load(str(tmp_path / "out" / "pruned.fp16.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    plan = json.loads((tmp_path / "out" / "build_plan.json").read_text())["models"]["pruned"]["plan"]
    assert plan["optimization_profiles"] == [{"input": {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32],
                                                         "max": [16, 3, 32, 32]}}]
    assert plan["hardware_compatibility_level"] is None and plan["required_compute_capability"] == [9, 0]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verification"]["passed"]


def test_bad_dynamic_batch(p2d, tmp_path):
    assert_user_error(p2d("compile", RESNET, "--input-shape", "1,3,32,32", "--dynamic-batch", "8,4,16"),
                      "1 <= min <= opt <= max")
    assert not (tmp_path / "p2d-out").exists()
