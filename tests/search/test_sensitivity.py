"""`p2d sensitivity`: the group whose removal destroys the output ranks most sensitive; outputs and errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, assert_user_error
from models import two_paths
from prune2deploy.context import ExampleInputs
from prune2deploy.config.options import CompileOptions
from prune2deploy.pipeline import sensitivity
from prune2deploy.search.sensitivity import measure_sensitivity


def build() -> nn.Module:
    return two_paths()


def test_destructive_group_ranks_most_sensitive():
    model, inputs = build(), ExampleInputs((torch.randn(2, 3, 8, 8),), {})
    result = measure_sensitivity(model, inputs, CompileOptions(round_to=4).validate(), None, ratios=(0.25, 0.5, 0.75),
                                 macs=True)
    names = [row["name"] for row in result["groups"]]
    assert names[0] == "fragile" and "free" in names
    rows = {row["name"]: row for row in result["groups"]}
    assert rows["fragile"]["mean_drop"] > 10 * rows["free"]["mean_drop"]
    assert rows["free"]["points"][-1]["score"] > 0.99  # fidelity barely moves when the free path thins
    assert result["metric"] == "fidelity to dense, random inputs (cosine)"
    assert [p["kept"] for p in rows["fragile"]["points"]] == [12, 8, 4]
    saved = [p["saved"] for p in rows["fragile"]["points"]]
    assert saved == sorted(saved) and saved[0] > 0  # MACs saved grow with the ratio


@pytest.mark.slow
def test_sensitivity_writes_outputs_with_measured_latency(tmp_path):
    model, inputs = build(), torch.randn(1, 3, 8, 8)
    result = sensitivity(model, inputs, tmp_path / "out", ratios=(0.5,), cache_dir=tmp_path / "cache",
                         round_to=4)
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"sensitivity.json", "sensitivity.md", "manifest.json"} <= names
    assert result["cost"] == "latency" and result["measured_by"].startswith("onnxruntime")
    assert result["candidates_timed"] == 2 and not result["table_cached"]
    saved = json.loads((out / "sensitivity.json").read_text())["groups"]
    assert all(isinstance(p["saved"], float) for row in saved for p in row["points"])
    assert "| fragile | channels | 16 |" in (out / "sensitivity.md").read_text()
    again = sensitivity(model, inputs, out, ratios=(0.5,), cache_dir=tmp_path / "cache", round_to=4)
    assert again["table_cached"] and again["candidates_timed"] == 0  # the latency table came from the cache


@pytest.mark.slow
def test_cli_sensitivity_and_bad_ratios(p2d, tmp_path):
    model = f"{MODELS}:two_paths"
    assert_user_error(p2d("sensitivity", model, "--input-shape", "1,3,8,8", "--out", "o", "--ratios", "0.5,1.5"),
                      "every ratio must be in (0, 1)")
    assert not (tmp_path / "o").exists()
    run = p2d("sensitivity", model, "--input-shape", "1,3,8,8", "--out", "o", "--ratios", "0.5", "--macs",
              "--round-to", "4")
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[1].split()[0] == "fragile"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert_user_error(p2d("sensitivity", model, "--input-shape", "1,3,8,8", "--out", "mine", "--macs"), "--out")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_process_pool_scores_like_this_process():
    from prune2deploy.search.executor import ProcessPoolExecutor, make_executor

    model, inputs = build(), ExampleInputs((torch.randn(2, 3, 8, 8),), {})
    inline = measure_sensitivity(model, inputs, CompileOptions(round_to=4).validate(), None, (0.5,), macs=True)
    pooled = measure_sensitivity(model, inputs, CompileOptions(round_to=4, workers=2).validate(), None, (0.5,),
                                 macs=True)
    assert isinstance(make_executor(2), ProcessPoolExecutor)
    flat = [[(p["kept"], p["saved"], p["score"]) for p in r["points"]] for r in inline["groups"]]
    assert [[(p["kept"], p["saved"], pytest.approx(p["score"], abs=1e-6)) for p in r["points"]]
            for r in pooled["groups"]] == flat  # one torch thread per worker: float sums differ in the last bits


def test_ray_executor_scores_like_this_process():
    """--ray-address local: a Ray instance started for the run (the model class must import on the workers)."""
    pytest.importorskip("ray")
    from prune2deploy.examples.mnist_cnn import build as mnist

    inputs = ExampleInputs((torch.randn(2, 1, 28, 28),), {})
    inline = measure_sensitivity(mnist(), inputs, CompileOptions(round_to=8).validate(), None, (0.5,), macs=True)
    remote = measure_sensitivity(mnist(), inputs, CompileOptions(round_to=8, ray_address="local").validate(), None,
                                 (0.5,), macs=True)
    assert [(r["name"], [p["kept"] for p in r["points"]]) for r in remote["groups"]] == \
        [(r["name"], [p["kept"] for p in r["points"]]) for r in inline["groups"]]
    assert [p["score"] for r in remote["groups"] for p in r["points"]] == \
        pytest.approx([p["score"] for r in inline["groups"] for p in r["points"]], abs=1e-6)


def test_ray_address_without_ray_is_one_line(p2d):
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed here")
    except ImportError:
        pass
    assert_user_error(p2d("sensitivity", f"{MODELS}:two_paths", "--input-shape", "1,3,8,8", "--out", "o", "--macs",
                          "--ray-address", "auto"), "--ray-address needs ray", "prune2deploy[ray]")
