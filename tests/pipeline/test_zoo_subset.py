"""A representative subset of what users bring (real torchvision/timm modules, small inputs), so that
coverage of real architectures cannot silently regress. The full sweep is benchmarks/zoo.py."""
from __future__ import annotations

import json
import time

import pytest
import torch

from helpers import import_or_skip
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.model.facts import count_macs_params
from prune2deploy.passes.prune_channels import PruneChannels, layer_widths


@pytest.fixture(scope="module")
def tv():
    return import_or_skip("torchvision")


def _prune(model, x, **kw):
    ctx = CompileContext(ExampleInputs((x,), {}))
    p = PruneChannels(**{"ratio": 0.5, "round_to": 8, **kw})
    with torch.no_grad():
        dense_shape = model(x).shape
    macs0 = count_macs_params(model, ctx.example_inputs)[0]
    record = p.run(model, ctx)
    p.ensure(model, ctx)  # runs, same output shapes, widths aligned
    with torch.no_grad():
        assert model(x).shape == dense_shape
    return record, macs0 / count_macs_params(model, ctx.example_inputs)[0]


def test_tiny_swin_block_local_prunes_mlps_and_keeps_the_stream(tv):
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                            window_size=[4, 4], num_classes=10).eval()
    before = layer_widths(model)
    record, reduction = _prune(model, torch.randn(1, 3, 32, 32), mode="block-local")
    after = layer_widths(model)
    assert record["pruning_mode"] == "block-local"
    assert "features.1.0.mlp" in record["blocks"] or "features.1.0" in record["blocks"]
    assert after["features.1.0.mlp.0"]["out"] == before["features.1.0.mlp.0"]["out"] // 2  # 128 -> 64
    assert after["features.1.0.mlp.3"]["out"] == before["features.1.0.mlp.3"]["out"]  # residual stream kept
    assert after["features.0.0"] == before["features.0.0"]  # the patch embedding is outside every block
    assert reduction > 1.2


def test_tiny_maxvit_keeps_its_attention_and_prunes_the_rest(tv):
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(0)
    model = MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, block_channels=[32, 64],
                   block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10).eval()
    before = layer_widths(model)
    # MaxViT's relative-position attention reshapes to its input width: its heads stay, and it is never
    # traced (torch-pruning's walk over it does not end); the MBConvs and MLPs around it are pruned
    started = time.monotonic()
    record, reduction = _prune(model, torch.randn(1, 3, 32, 32), mode="block-local")
    assert time.monotonic() - started < 60
    after = layer_widths(model)
    assert record["pruning_mode"] == "block-local"
    assert "blocks.0.layers.0.layers.window_attention.mlp_layer" in record["blocks"]
    assert "blocks.0.layers.0.layers.MBconv" in record["blocks"]
    attn = "blocks.0.layers.0.layers.window_attention.attn_layer.1"
    assert {"group": attn, "reason": "RelativePositionalMultiHeadAttention: attention heads kept (p2d removes "
            "heads of timm Attention, nn.MultiheadAttention and BERT-style attention only)"} in record["skipped"]
    assert after[f"{attn}.to_qkv"] == before[f"{attn}.to_qkv"]
    assert record["split_blocks"] == []  # no block ran past its budget
    assert reduction > 1.2


def test_tiny_cait_keeps_talking_heads_and_prunes_the_mlps():
    """CaiT's talking-heads and class attention derive the head size from the input width; pruning their
    heads breaks them (and torch-pruning's own walk raises on them), so they stay and the MLPs are pruned."""
    import_or_skip("timm")
    from timm.models import cait
    torch.manual_seed(0)
    model = cait.Cait(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
                      num_classes=10).eval()
    before = layer_widths(model)
    record, reduction = _prune(model, torch.randn(1, 3, 32, 32))
    after = layer_widths(model)
    kept = {s["group"]: s["reason"] for s in record["skipped"]}
    assert kept["blocks.0.attn"].startswith("TalkingHeadAttn: attention heads kept")
    assert kept["blocks_token_only.0.attn"].startswith("ClassAttn: attention heads kept")
    assert after["blocks.0.attn.qkv"] == before["blocks.0.attn.qkv"]
    assert after["blocks.0.attn.proj_l"] == before["blocks.0.attn.proj_l"]
    assert after["blocks.0.mlp.fc1"]["out"] == before["blocks.0.mlp.fc1"]["out"] // 2  # 128 -> 64
    assert reduction > 1.2


def test_tiny_timm_swin_fits_the_whole_graph_with_its_attention_kept():
    """timm's WindowAttention keeps its heads and is left out of the graph: the rest fits the whole-model
    graph (the real Swin-T: 22 s instead of a walk that did not end in 10 minutes)."""
    import_or_skip("timm")
    from timm.models import swin_transformer as swin
    torch.manual_seed(0)
    model = swin.SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2,),
                                 num_heads=(2,), num_classes=10).eval()
    before = layer_widths(model)
    record, reduction = _prune(model, torch.randn(1, 3, 32, 32))
    after = layer_widths(model)
    assert record["pruning_mode"] == "global graph"
    assert [s["group"] for s in record["skipped"]] == ["layers.0.blocks.0.attn", "layers.0.blocks.1.attn"]
    assert after["layers.0.blocks.0.attn.qkv"]["out"] == before["layers.0.blocks.0.attn.qkv"]["out"]
    assert after["layers.0.blocks.0.mlp.fc1"]["out"] < before["layers.0.blocks.0.mlp.fc1"]["out"]
    assert reduction > 1.2


@pytest.mark.slow
def test_shufflenet_cli_degrades_with_an_account(tv, p2d_in_process, tmp_path):
    """torch-pruning cannot build ShuffleNet's whole graph (channel shuffle): p2d prunes block by block,
    leaves the groups that break unpruned, says so on stderr and in report.json, and verifies the ONNX."""
    r = p2d_in_process("compile", "torchvision:shufflenet_v2_x0_5", "--input-shape", "1,3,64,64", "--out", "out",
                       "--no-benchmark", "--no-cache", "--round-to", "8")  # the default follows the CPU: pinned
    assert r.code == 0, r.stderr
    assert "internal error" not in r.stderr
    assert "warning: pruned block by block: torch-pruning cannot trace the whole model" in r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pruning_mode"] == "block-local"
    assert report["verification"]["passed"]
    assert report["mac_reduction"] > 1.2
    for item in report["skipped"]:
        assert item["group"] and item["reason"]
        assert f"warning: left unpruned: {item['group']}: " in r.stderr


@pytest.mark.slow
def test_shufflenet_global_mode_is_one_line(tv, p2d, tmp_path):
    from helpers import assert_user_error

    r = p2d("compile", "torchvision:shufflenet_v2_x0_5", "--input-shape", "1,3,64,64", "--out", "out",
            "--no-benchmark", "--pruning-mode", "global")
    assert_user_error(r, "global pruning is not possible", "ZeroDivisionError", "--pruning-mode auto")
    assert not (tmp_path / "out").exists()


def test_ghostnet_group_that_misaligns_a_width_is_rolled_back():
    """torch-pruning loses track of GhostNet's concat-then-slice and leaves conv_stem 2 channels wide (off
    --round-to 8), which once ended the compile; now that is a broken group like any other."""
    timm = import_or_skip("timm")
    torch.manual_seed(0)
    model = timm.create_model("ghostnet_100", pretrained=False, num_classes=10).eval()
    record, reduction = _prune(model, torch.randn(1, 3, 64, 64))  # round_to 8; ensure checks every width
    for layer in record["layers"]:
        for side in ("in", "out"):
            assert layer[f"{side}_after"] == layer[f"{side}_before"] or layer[f"{side}_after"] % 8 == 0
    assert reduction > 1.1
