"""`p2d sensitivity`: the group whose removal destroys the output ranks most sensitive; outputs and errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, assert_user_error
from models import two_paths
from prune2deploy.context import ExampleInputs
from prune2deploy.options import CompileOptions
from prune2deploy.search.sensitivity import measure_sensitivity, sensitivity


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
