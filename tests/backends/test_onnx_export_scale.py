"""Memory and scale: per-stage peak RSS in the report, and the large-model export path (dynamo streaming
weights to external data, checked on disk, verified, cached) exercised on a small model by lowering the
thresholds. Nothing here builds a big model: benchmarks/scale.py does (ViT-B/L/H, BERT)."""
from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch

import prune2deploy
from models import resnet_like, transformer_like
from prune2deploy.backends.onnx import export as onnx_export
from prune2deploy.backends.onnx.recheck import verify_out_dir
from prune2deploy.runtime.peak_memory import PeakTracker, process_peak_mb
from prune2deploy.runtime.progress import Progress
from prune2deploy.pipeline import Output

MB = 1024**2
FAST = dict(bench_seconds=0.3, threads=1, min_iters=3, warmup=1)


def _hold(megabytes: int) -> np.ndarray:
    block = np.ones(megabytes * MB, dtype=np.uint8)  # ones: every page is touched, so it is resident
    return block


@pytest.mark.skipif(not PeakTracker().supported, reason="needs Linux /proc/self/clear_refs")
def test_stage_peaks_follow_the_memory_each_stage_held():
    progress = Progress(enabled=False, stream=io.StringIO())
    with progress.stage("outer", "outer"):
        with progress.stage("big", "big"):
            block = _hold(300)
            del block
        with progress.stage("small", "small"):
            block = _hold(20)
            del block
    with progress.stage("after", "after"):
        pass
    peaks = progress.peaks_mb
    assert peaks["big"] - peaks["after"] >= 250  # the 300 MB block shows in its own stage only
    assert peaks["small"] < peaks["big"] - 200
    assert peaks["outer"] >= peaks["big"]  # a nested stage's reset does not hide the outer stage's peak
    assert process_peak_mb() >= peaks["big"]  # the whole-process peak spans the resets


def test_report_has_plausible_per_stage_peaks(tmp_path):
    result = prune2deploy.compile(resnet_like(), torch.randn(1, 3, 32, 32), out_dir=tmp_path / "out", **FAST,
        output=Output(use_cache=False))
    report = result.report
    peaks = report["stages_peak_rss_mb"]
    assert set(peaks) == set(report["stages_s"]) == set(report["stages_cpu_s"]) and {"export_dense", "verify_dense", "benchmark"} <= set(peaks)
    if not PeakTracker().supported:
        pytest.skip("no per-stage peaks off Linux")
    for stage, mb in peaks.items():
        assert 50 < mb <= report["peak_rss_mb"], (stage, mb)  # torch alone keeps > 50 MB resident
    assert report["peak_rss_mb"] == pytest.approx(max(peaks.values()), abs=400)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["stages_peak_rss_mb"] == peaks


@pytest.fixture
def large_model_path(monkeypatch):
    """Every model counts as large, and protobuf's limit is 1 KB: the ViT-H path on a small model."""
    monkeypatch.setattr(onnx_export, "LARGE_MODEL_BYTES", 1)
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1024)


@pytest.mark.slow
def test_large_model_path_streams_external_data_verified_and_cached(tmp_path, large_model_path):
    model, x = transformer_like(), torch.randint(0, 100, (1, 16))
    out, cache_dir = tmp_path / "out", tmp_path / "cache"
    report = prune2deploy.compile(model, x, out_dir=out, **FAST, output=Output(cache_dir=cache_dir)).report
    for name in ("dense", "pruned"):
        record = report["export"][name]
        assert record["exporter"] == "dynamo" and record["external_data"] and "fallback" not in record
        assert record["onnxslim"]["applied"] is False
        graph, data = out / f"{name}.onnx", out / f"{name}.onnx.data"
        assert graph.stat().st_size < 200_000 and data.stat().st_size > 0.9 * record["weight_bytes"]
        assert report["models"][name]["onnx_bytes"] == graph.stat().st_size + data.stat().st_size
        onnx.checker.check_model(str(graph), full_check=True)
        initializers = onnx.load(str(graph), load_external_data=False).graph.initializer
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in initializers)
    assert report["verification"]["passed"] and report["verification"]["max_rel_err"] < 1e-4
    assert report["speedup"] > 0
    assert not list(out.glob(".*.export"))  # the exporter's staging directory is gone
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {"dense.onnx.data", "pruned.onnx.data"} <= set(manifest)
    assert verify_out_dir(out)["passed"]  # p2d verify: hashes, then ONNX with external data vs torch outputs

    again = prune2deploy.compile(model, x, out_dir=out, **FAST, output=Output(cache_dir=cache_dir)).report
    assert again["cache"]["hit"] and {"dense.onnx.data", "pruned.onnx.data"} <= set(again["cache"]["reused"])
    assert again["speedup"] > 0 and verify_out_dir(out)["passed"]


def test_dynamo_failure_falls_back_to_torchscript(tmp_path, large_model_path, monkeypatch):
    real = onnx_export._run_exporter

    def dynamo_breaks(model, inputs, path, opset, exporter, *args, **kwargs):
        if exporter == "dynamo":
            raise onnx_export.P2DError("torch.onnx.export (dynamo) failed: unsupported op")
        return real(model, inputs, path, opset, exporter, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "_run_exporter", dynamo_breaks)
    from prune2deploy.context import ExampleInputs

    model, x = resnet_like(), ExampleInputs((torch.randn(1, 3, 32, 32),), {})
    record = onnx_export.export_onnx(model, x, tmp_path / "m.onnx")
    assert record["exporter"] == "torchscript" and "unsupported op" in record["fallback"]
    assert record["external_data"] and (tmp_path / "m.onnx.data").exists()  # past the lowered 2 GB limit
    assert record["onnxslim"]["applied"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_snapshot_restore_drops_hooks_an_interrupted_trace_left():
    """The graph budget interrupts torch-pruning's trace before it removes its hooks (ViT-L/16 on a busy
    machine); the restored model must pickle again."""
    from prune2deploy.passes.degrade import Snapshot

    model = resnet_like()
    model.fc.register_forward_hook(lambda *a: None)  # the user's own hook stays
    snapshot = Snapshot(model)

    def traced(module, inputs, outputs):  # a local function, as torch-pruning's _record_grad_fn
        return None

    for m in model.modules():
        m.register_forward_hook(traced)
    snapshot.restore()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 1
    torch.save(torch.nn.Sequential(*[c for c in model.children() if c is not model.fc]), io.BytesIO())
