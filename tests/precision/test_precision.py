"""The precision stage: --precision per target, INT8 calibrated on real samples (scikit-learn's digits), the
deployed artifacts checked against torch FP32 and measured on the validation data, and the baselines timed
with them (the dense model in FP32 on the same runtime)."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from digits import digits, trained_digits_cnn
from helpers import MODELS, assert_user_error

from prune2deploy.precision.choose import Precision, calibration_feeds, resolve
from prune2deploy.context import ExampleInputs

RESNET = [f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32"]


def _cpuinfo(tmp_path, name: str, flags: str) -> str:
    path = tmp_path / name
    path.write_text(f"processor\t: 0\nmodel name\t: some Xeon\nflags\t\t: fpu sse2 avx2 avx512f {flags}\n\n")
    return str(path)


def test_auto_follows_the_target_and_the_cpu_flags(monkeypatch, tmp_path):
    from prune2deploy.backends.ov_cpu import driver as ov

    monkeypatch.setattr(ov, "cpu_precisions", lambda: ("fp32", "bf16", "int8"))
    amx = _cpuinfo(tmp_path, "amx", "avx512_vnni amx_bf16 amx_int8 amx_tile")
    precision, why = ov.OvCpuDriver().auto_precision(cpuinfo=amx)
    assert precision == "bf16" and "amx_bf16" in why
    assert ov.OvCpuDriver().auto_precision(cpuinfo=_cpuinfo(tmp_path, "zen4", "avx512_vnni avx512_bf16"))[0] == "bf16"
    plain = _cpuinfo(tmp_path, "skylake", "avx512bw avx512_vnni")  # VNNI is INT8, not BF16
    precision, why = ov.OvCpuDriver().auto_precision(cpuinfo=plain)
    assert precision == "fp32" and "no native BF16" in why
    monkeypatch.setattr(ov, "cpu_precisions", lambda: ("fp32", "int8"))  # an OpenVINO without BF16 on this CPU
    assert ov.OvCpuDriver().auto_precision(cpuinfo=amx)[0] == "fp32"
    assert resolve("auto", "ov-cpu", ("fp32", "int8"), ("fp32", "no BF16")).deployed == "fp32"
    from prune2deploy.backends.ort_cpu.driver import OrtCpuDriver

    assert OrtCpuDriver().auto_precision()[0] == "fp32" and "int8" in OrtCpuDriver().precisions()


@pytest.mark.slow
def test_a_precision_the_target_cannot_run_is_one_line(p2d, tmp_path):
    r = p2d("compile", *RESNET, "--target", "ort-cpu", "--precision", "bf16", "--out", "out")
    assert_user_error(r, "ort-cpu cannot run --precision bf16", "fp32, int8")
    r = p2d("compile", *RESNET, "--target", "trt-ampere", "--precision", "bf16", "--out", "out")
    assert_user_error(r, "trt-ampere cannot run --precision bf16", "fp16, int8")
    assert not (tmp_path / "out").exists()


def test_int8_without_samples_is_refused_and_random_needs_opt_in(p2d, tmp_path):
    r = p2d("compile", *RESNET, "--precision", "int8", "--out", "out")
    assert_user_error(r, "int8 calibrates on real samples", "--calib-data", "--calib-random")
    assert not (tmp_path / "out").exists()
    example = ExampleInputs((torch.zeros(1, 3, 8, 8),), {})
    p = Precision("int8", "int8", "as requested")
    feeds = calibration_feeds(p, [], example, calib_random=True, seed=0, data_label=None)
    assert len(feeds) == 32 and "NOT real data" in p.calibration["source"]


def test_calibration_feeds_regroup_real_batches_to_the_example_batch():
    example = ExampleInputs((torch.zeros(2, 4),), {})
    batch = (ExampleInputs((torch.arange(40.0).reshape(10, 4),), {}), None)
    p = Precision("int8", "int8", "as requested")
    feeds = calibration_feeds(p, [batch], example, calib_random=False, seed=0, data_label="data.pt")
    assert [f["input"].shape for f in feeds] == [(2, 4)] * 5 and p.calibration == {"source": "data.pt", "samples": 10}
    # data batches smaller than the exported batch (batch_size 32, a batch-64 graph) are joined, not dropped
    wide = ExampleInputs((torch.zeros(64, 4),), {})
    small = [(ExampleInputs((torch.full((32, 4), float(i)),), {}), None) for i in range(4)]
    feeds = calibration_feeds(Precision("int8", "int8", "x"), small, wide, calib_random=False, seed=0, data_label="d")
    assert [f["input"].shape for f in feeds] == [(64, 4)] * 2 and feeds[0]["input"][31:33, 0].tolist() == [0.0, 1.0]


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    torch.save(digits(), path)
    return path


@pytest.mark.parametrize("target", ["ort-cpu", "ov-cpu"])
@pytest.mark.slow
def test_int8_on_real_digits_keeps_accuracy(target, digits_file, tmp_path, monkeypatch):
    from prune2deploy.backends.ort_cpu import driver as ort
    from prune2deploy.pipeline import Output, compile

    monkeypatch.setattr(ort, "INT8_MIN_SPEEDUP", 0.0)  # INT8 ships even if it is not faster on this tiny model

    result = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), target=target, out_dir=tmp_path / "out",
                     ratio=0.3, data=str(digits_file), val_split=0.2, recover="none", precision="int8", bench_seconds=1, min_iters=10,
                         output=Output(use_cache=False))
    report = result.report
    acc = report["accuracy"]
    assert report["precision"]["deployed"] == "int8" and report["precision"]["calibration"]["samples"] == 128
    assert acc["dense"] > 90 and abs(acc["dense_deployed"] - acc["dense"]) <= 1.0  # INT8 of the dense model
    assert abs(acc["pruned_deployed"] - acc["pruned"]) <= 2.0 and acc["deployed_precision"] == "int8"
    checks = report["verification"]["deployed"]
    assert set(checks) == {"dense", "pruned"} and all(c["passed"] and c["cosine_min"] > 0.99 for c in checks.values())
    assert checks["dense"]["input_sets"] == 32  # real validation samples, not random inputs
    stats = {name: m["latency_ms"]["p50"] for name, m in report["models"].items()}
    assert set(stats) == {"dense", "pruned", "dense_fp32", "pruned_fp32"}  # the 2x2, timed in the same run
    assert report["speedup_vs_dense_fp32"] == pytest.approx(stats["dense_fp32"] / stats["pruned"])
    assert "## Precision" in (tmp_path / "out" / "report.md").read_text()


def test_ort_cpu_ships_fp32_when_int8_is_not_faster(digits_file, tmp_path, monkeypatch):
    from prune2deploy.backends.ort_cpu import driver as ort
    from prune2deploy.pipeline import Output, compile

    timed = []

    def slower_int8(variants, **kw):  # the measurement this machine would give for a narrow pruned CNN
        timed.append(sorted(variants))
        return {"fp32": [1.0] * 20, "int8": [1.1] * 20}

    monkeypatch.setattr(ort, "time_interleaved", slower_int8)
    result = compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), target="ort-cpu", out_dir=tmp_path / "out",
                     ratio=0.3, data=str(digits_file), val_split=0.2, recover="none", precision="int8",
                     skip_benchmark=False, bench_seconds=0.3, min_iters=3, output=Output(use_cache=False))
    report = result.report
    assert timed[0] == ["fp32", "int8"]
    assert report["precision"]["requested"] == "int8" and report["precision"]["deployed"] == "fp32"
    assert "ran 1.10x the time of FP32" in report["precision"]["why"]
    assert report["int8_speed_check"]["speedup"] == pytest.approx(1 / 1.1)
    assert not list((tmp_path / "out").glob("*.int8.onnx")) and "deployed" not in report["verification"]
    assert set(report["models"]) == {"dense", "pruned"}  # what ships is timed: the FP32 pair


def test_ort_int8_never_takes_the_signed_activation_path(digits_file, tmp_path):
    from prune2deploy.backends.ort_cpu.quantize import quantize_int8

    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(trained_digits_cnn(), (torch.zeros(1, 1, 8, 8),), str(onnx_path), input_names=["input"],
                      dynamo=False)
    x, _ = digits()
    record = quantize_int8(onnx_path, tmp_path / "m.int8.onnx", [{"input": x[i:i + 1].numpy()} for i in range(16)])
    model = onnx.load(str(tmp_path / "m.int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    activation_zero_points = [inits[n.input[2]] for n in model.graph.node
                              if n.op_type == "QuantizeLinear" and n.input[2] in inits and not n.input[0].endswith("weight")]
    assert record["activations"] == "QUInt8" and activation_zero_points
    assert all(zp.data_type == onnx.TensorProto.UINT8 for zp in activation_zero_points)


@pytest.mark.slow
def test_ov_cpu_transformer_end_to_end(p2d_in_process, tmp_path):
    r = p2d_in_process("compile", f"{MODELS}:transformer_like", "--input", "tokens:1x16:int64", "--target", "ov-cpu",
                       "--precision", "fp32", "--out", "out", "--bench-seconds", "0.5", "--json")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["target"] == "ov-cpu" and report["verification"]["deployed"]["pruned"]["passed"]
    assert (tmp_path / "out" / "pruned.fp32.xml").exists() and (tmp_path / "out" / "pruned.fp32.bin").exists()
    assert report["benchmark"]["settings"]["properties"]["pruned"]["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.slow
def test_p2d_verify_rechecks_the_deployed_artifacts(p2d_in_process, tmp_path):
    r = p2d_in_process("compile", *RESNET, "--target", "ov-cpu", "--precision", "int8", "--calib-random",
                       "--out", "out", "--no-benchmark")
    assert r.code == 0, r.stderr
    assert "NOT real data" in (tmp_path / "out" / "report.md").read_text()
    v = p2d_in_process("verify", "out")
    assert v.code == 0, v.stderr
    assert "pruned.int8.xml: cosine min" in v.stdout and "dense.int8.xml: cosine min" in v.stdout
    cached = p2d_in_process("compile", *RESNET, "--target", "ov-cpu", "--precision", "fp32", "--out", "out2",
                            "--no-benchmark", "--json")
    assert cached.code == 0 and json.loads(cached.stdout)["cache"]["hit"] is False  # precision is in the cache key


def test_tensorrt_int8_is_symmetric_qdq_checked_on_the_cpu(digits_file, tmp_path):
    """TensorRT 11 builds strongly typed networks: INT8 is Q/DQ in the ONNX, zero points 0, checked here in
    onnxruntime against torch FP32; the build plan builds the engines from those files."""
    from prune2deploy.backends.tensorrt.int8 import check_symmetric
    from prune2deploy.errors import MissingDependency
    from prune2deploy.pipeline import Output, compile

    try:
        compile(trained_digits_cnn(), torch.zeros(1, 1, 8, 8), target="trt-ampere", out_dir=tmp_path / "out",
                ratio=0.3, data=str(digits_file), val_split=0.2, recover="none", precision="int8",
                output=Output(use_cache=False))
        pytest.skip("TensorRT and a GPU are here: the engine path is tested by tests/backends/test_tensorrt_engine.py")
    except MissingDependency as error:
        report = error.report
    out = tmp_path / "out"
    for name in ("dense", "pruned"):
        model = onnx.load(str(out / f"{name}.int8.onnx"))
        pairs, nonzero = check_symmetric(model)
        assert pairs >= 3 and nonzero == []
        assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
        assert report["verification"]["deployed"][name]["passed"]
    plan = json.loads((out / "build_plan.json").read_text())
    assert {m["onnx"] for m in plan["models"].values()} == {"dense.int8.onnx", "pruned.int8.onnx"}
    acc = report["accuracy"]
    assert abs(acc["dense_deployed"] - acc["dense"]) <= 1.5 and report["precision"]["deployed"] == "int8"
    assert report["status"] == "prepared" and not list(out.glob("*.fp16.onnx"))
