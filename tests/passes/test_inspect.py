"""`p2d inspect` builds the whole-model graph under the same budget as a compile, and says which pruning
mode a compile would use; block-local lists the blocks without tracing them."""
from __future__ import annotations

import json
import time

import pytest

from helpers import MODELS, assert_user_error


def test_inspect_falls_back_to_block_local_within_the_budget(p2d_in_process):
    started = time.time()
    r = p2d_in_process("inspect", f"{MODELS}:busy_when_traced", "--input-shape", "1,3,8,8", "--graph-budget-s", "2")
    assert time.time() - started < 60
    assert r.code == 0, r.stderr
    assert "pruning mode: block-local (the whole model's dependency graph took over 2 s)" in r.stdout
    assert "0 blocks pruned one by one" in r.stdout


@pytest.mark.slow
def test_inspect_global_mode_refuses_with_one_line(p2d):
    r = p2d("inspect", f"{MODELS}:busy_when_traced", "--input-shape", "1,3,8,8", "--graph-budget-s", "2",
            "--pruning-mode", "global")
    assert_user_error(r, "global pruning is not possible", "took over 2 s")


def test_inspect_block_local_lists_blocks_and_kept_attention(p2d_in_process, tmp_path):
    (tmp_path / "swin.py").write_text(
        "import torch\n"
        "from prune2deploy.runtime.compat import import_torchvision\n"
        "def build():\n"
        "    tv = import_torchvision()\n"
        "    from torchvision.models.swin_transformer import SwinTransformer\n"
        "    torch.manual_seed(0)\n"
        "    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2], num_heads=[2],\n"
        "                           window_size=[4, 4], num_classes=10)\n")
    from prune2deploy.runtime.compat import import_torchvision
    if import_torchvision() is None:
        pytest.skip("torchvision does not import here")
    r = p2d_in_process("inspect", "swin.py:build", "--input-shape", "1,3,32,32", "--pruning-mode", "block-local",
                       "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["pruning_mode"] == "block-local" and info["pruning_mode_reason"] == "--pruning-mode block-local"
    assert info["blocks"] == ["features.1.0.mlp", "features.1.1.mlp"]
    assert [k["group"] for k in info["attention_kept"]] == ["features.1.0.attn", "features.1.1.attn"]
    assert info["groups"] == []


def test_inspect_whole_graph_says_global(p2d_in_process):
    r = p2d_in_process("inspect", f"{MODELS}:transformer_like", "--input", "tokens:1x16:int64", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["pruning_mode"] == "global graph" and info["pruning_mode_reason"] is None
    assert info["groups"] and info["blocks"] is None
