"""Whole-head pruning support: find attention blocks, feed torch-pruning, fix static attributes after.

Three families are recognised by duck-typing, none needs a user patch:

* ``hf-bert``   transformers BertSelfAttention and lookalikes (query/key/value Linears,
  ``num_attention_heads``/``attention_head_size``/``all_head_size``);
* ``torch-mha`` ``nn.MultiheadAttention`` (torchvision ViT, ``nn.TransformerEncoderLayer``);
* ``timm-vit``  timm-style ``Attention`` (one fused ``qkv`` Linear, ``num_heads``, ``head_dim``, ``proj``).

Any other module with a head count (``num_heads``/``n_heads``: CaiT's talking-heads and class attention,
Swin's window attention, MaxViT's relative-position attention) keeps its heads: its layers are ignored,
since removing heads behind the back of a forward p2d does not know is not safe (most derive the head
size from the input width). ``plan.kept`` lists them with the reason; the rest of the model is pruned.

Call order in the pruning pass::

    plan = plan_attention(model)
    plan.prune_heads(model, example_inputs, head_ratio)        # torch-mha only; no-op otherwise
    pruner = tp.pruner.BasePruner(model, example_inputs, ...,
                                  ignored_layers=[*own, *plan.ignored_layers],
                                  **plan.pruner_kwargs(head_ratio))
    pruner.step()
    records = plan.fix_up(model)
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from prune2deploy.errors import UserError

from prune2deploy.passes.graph_budget import release_trace

# A head-scope pruning ratio this small makes torch-pruning enter its head-removal branch
# (it only removes heads inside a scope that prunes >= 1 channel) without pruning any dims,
# because prune_head_dims=False keeps the attention groups' dims intact.
_HEAD_SCOPE_TRIGGER = 1e-6


@dataclass
class _Block:
    """One attention block as found before pruning."""

    name: str
    module: nn.Module
    kind: str
    heads: int
    head_dim: int

    @property
    def head_layers(self) -> list[nn.Module]:
        """The layers torch-pruning must know the head count of."""
        m = self.module
        if self.kind == "hf-bert":
            return [m.query, m.key, m.value]
        if self.kind == "timm-vit":
            return [m.qkv]
        return [m]


@dataclass
class AttentionPlan:
    """What the pruning pass hands torch-pruning for attention, and how to repair the model after."""

    num_heads: dict = field(default_factory=dict)
    unwrapped_parameters: dict = field(default_factory=dict)
    ignored_layers: list = field(default_factory=list)
    kind: str = "none"
    blocks: list = field(default_factory=list)
    kept: list = field(default_factory=list)  # [{"group": name, "reason": why}]: attention whose heads stay
    kept_modules: list = field(default_factory=list)

    def pruner_kwargs(self, head_ratio: float) -> dict:
        """Keyword arguments for ``tp.pruner.BasePruner``; ``ignored_layers`` is NOT included (merge it)."""
        _check_ratio(head_ratio)
        kwargs: dict = {}
        if self.unwrapped_parameters:
            # torch-pruning 1.6 wants a list of (param, dim) pairs, not the dict its docstring shows.
            kwargs["unwrapped_parameters"] = list(self.unwrapped_parameters.items())
        if not self.num_heads:
            return kwargs
        by_tp = [b for b in self.blocks if b.kind != "torch-mha"]
        kwargs.update(
            num_heads=dict(self.num_heads),  # a copy: BasePruner decrements the counts in place
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=head_ratio,
            # local pruning removes ceil(ratio*heads); this ratio makes it round(head_ratio*heads)
            head_pruning_ratio_dict={b.module: _ratio_for_ceil(head_ratio, b.heads) for b in by_tp},
            pruning_ratio_dict={layer: _HEAD_SCOPE_TRIGGER for b in by_tp for layer in b.head_layers},
        )
        return kwargs

    def schedule_heads(self, pruner, head_ratio: float, steps: int) -> None:
        """Make `steps` iterative steps end at the heads one step would keep.

        torch-pruning applies step k's cumulative head ratio to the heads left after step k-1, so removals
        compound (12 heads at 0.5 in 2 steps: 3, then ceil(0.5 * 9) = 5, ending at 4 heads, not 6). Each
        block's schedule is rewritten as per-step ratios of the heads then left (a ceil-proof r per step)."""
        if steps <= 1:
            return
        for b in (b for b in self.blocks if b.kind != "torch-mha"):
            left, ratios = b.heads, [0.0]
            for k in range(1, steps + 1):
                remove = _heads_to_remove(head_ratio * k / steps, b.heads) - (b.heads - left)
                ratios.append(_ratio_removing(remove, left))
                left -= max(remove, 0)
            for sub in b.module.modules():
                if sub in pruner.head_pruning_ratio_dict:
                    pruner.head_pruning_ratio_dict[sub] = list(ratios)

    def prune_heads(self, model: nn.Module, example_inputs, head_ratio: float, check_runs: bool = True,
                    forward_fn=None) -> bool:
        """Remove whole heads of nn.MultiheadAttention blocks (torch-pruning 1.6 cannot); no-op for others.

        True when heads were removed. `check_runs=False` leaves the check that the model still runs to the
        caller (`check_still_runs`), who runs the model next anyway: one forward fewer on a large model.
        `forward_fn(model, example_inputs)`: how torch-pruning's trace calls the model (default `run_example`)."""
        _check_ratio(head_ratio)
        mha_blocks = [b for b in self.blocks if b.kind == "torch-mha"]
        if not mha_blocks or _heads_to_remove(head_ratio, mha_blocks[0].heads) == 0:
            return False
        import torch_pruning as tp

        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs, forward_fn=forward_fn or run_example,
            unwrapped_parameters=list(self.unwrapped_parameters.items()) or None
        )
        done: set[int] = set()
        for block in mha_blocks:
            if id(block.module) in done:
                continue
            mha = block.module
            full = graph.get_pruning_group(mha, tp.prune_multihead_attention_out_channels, list(range(mha.embed_dim)))
            tied = [b for b in mha_blocks if any(dep.target.module is b.module for dep, _ in full)] or [block]
            if len({(b.heads, b.head_dim) for b in tied}) != 1:
                raise UserError(
                    f"attention blocks sharing a residual stream with {block.name} differ in head layout",
                    "prune heads with head_ratio 0 for this model",
                )
            n_remove = _heads_to_remove(head_ratio, block.heads)
            weakest = torch.argsort(sum(_mha_head_importance(b.module, b.heads) for b in tied))[:n_remove]
            idxs = sorted(int(h) * block.head_dim + d for h in weakest for d in range(block.head_dim))
            group = graph.get_pruning_group(mha, tp.prune_multihead_attention_out_channels, idxs)
            if not graph.check_pruning_group(group):
                raise UserError(f"cannot remove heads of {block.name}", "exclude it from head pruning")
            group.prune()
            done.update(id(b.module) for b in tied)
        release_trace(graph)
        self.fix_up(model)
        # pruning replaced the class token / pos embedding Parameters: point the plan at the new ones
        self.unwrapped_parameters = _loose_residual_parameters(model, _residual_widths(self.blocks))
        if check_runs:
            check_still_runs(model, example_inputs)
        return True

    def fix_up(self, model: nn.Module) -> list[dict]:
        """Set head counts and derived sizes from the pruned weights; one record per block."""
        records = [_FIXERS[b.kind](b, model) for b in self.blocks]
        _sync_hf_config(model, self.blocks)
        return records


def plan_attention(model: nn.Module) -> AttentionPlan:
    """Find the attention blocks of ``model`` and what torch-pruning needs to remove their heads."""
    blocks = [b for name, m in model.named_modules() if (b := _detect(name, m)) is not None]
    plan = AttentionPlan(blocks=blocks)
    for name, m in _unsupported_attention(model, blocks):
        plan.kept.append({"group": name, "reason": f"{type(m).__name__}: attention heads kept ({KEPT_WHY})"})
        plan.kept_modules.append(m)
        plan.ignored_layers += [x for x in m.modules() if isinstance(x, PRUNABLE_IN_ATTENTION)]
    if not blocks:
        return plan
    plan.kind = ",".join(dict.fromkeys(b.kind for b in blocks))
    for b in blocks:
        if b.kind != "torch-mha":
            plan.num_heads.update({layer: b.heads for layer in b.head_layers})
    if any(b.kind == "hf-bert" for b in blocks):
        # Keep the residual stream (hidden_size): embeddings tie it; pruning it breaks the
        # OutputPruner of last_hidden_state and config.hidden_size. The pooler is an output.
        plan.ignored_layers += [m for m in model.modules() if isinstance(m, nn.Embedding)]
        plan.ignored_layers += [m for n, m in model.named_modules() if n.split(".")[-1] == "pooler"]
    for b in blocks:
        if b.kind == "timm-vit":  # q/k norms work per head (head_dim wide): no channel of theirs is prunable
            plan.ignored_layers += [n for n in (getattr(b.module, "q_norm", None), getattr(b.module, "k_norm", None))
                                    if isinstance(n, nn.Module) and not isinstance(n, nn.Identity)]
    mha = [b for b in blocks if b.kind == "torch-mha"]
    if mha:
        # BasePruner must not touch the MHA groups (== residual stream): prune_heads does it head-aligned.
        plan.ignored_layers += [b.module for b in mha]
    widths = _residual_widths(blocks)
    if widths:
        plan.unwrapped_parameters.update(_loose_residual_parameters(model, widths))
    return plan


# ---------------------------------------------------------------- detection

def _detect(name: str, m: nn.Module) -> _Block | None:
    """Classify one module as an attention block, or None."""
    if isinstance(m, nn.MultiheadAttention):
        if not m._qkv_same_embed_dim:
            raise UserError(f"{name}: MultiheadAttention with kdim/vdim != embed_dim is not supported", "set head_ratio 0")
        return _Block(name, m, "torch-mha", m.num_heads, m.head_dim)
    if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value")) and isinstance(
        getattr(m, "num_attention_heads", None), int
    ) and hasattr(m, "attention_head_size"):
        return _Block(name, m, "hf-bert", m.num_attention_heads, int(m.attention_head_size))
    if type(m).__name__ == "Attention" and isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(
        getattr(m, "num_heads", None), int
    ):
        head_dim = int(getattr(m, "head_dim", m.qkv.out_features // (3 * m.num_heads)))
        return _Block(name, m, "timm-vit", m.num_heads, head_dim)
    return None


HEAD_COUNTS = ("num_heads", "n_heads")
PRUNABLE_IN_ATTENTION = (nn.Linear, nn.modules.conv._ConvNd)
KEPT_WHY = "p2d removes heads of timm Attention, nn.MultiheadAttention and BERT-style attention only"


def _has_head_count(m: nn.Module) -> bool:
    return any(isinstance(getattr(m, a, None), int) and not isinstance(getattr(m, a), bool) for a in HEAD_COUNTS)


def _unsupported_attention(model: nn.Module, blocks: list) -> list[tuple[str, nn.Module]]:
    """Innermost modules with a head count and prunable layers that are not (in, or around) a supported block."""
    supported = {id(b.module) for b in blocks}
    inside_supported = {id(x) for b in blocks for x in b.module.modules()}
    found = []
    for name, m in model.named_modules():
        if id(m) in inside_supported or not _has_head_count(m):
            continue
        inner = [x for x in m.modules() if x is not m]
        if any(id(x) in supported or _has_head_count(x) for x in inner):
            continue  # a block around attention (torchvision ViT's EncoderBlock keeps a num_heads copy)
        if any(isinstance(x, PRUNABLE_IN_ATTENTION) for x in inner):
            found.append((name, m))
    return found


def _residual_widths(blocks: list) -> set[int]:
    """Current residual widths of the blocks whose residual stream torch-pruning may prune."""
    return {b.module.embed_dim for b in blocks if b.kind == "torch-mha"} | {
        b.module.qkv.in_features for b in blocks if b.kind == "timm-vit"}


def _loose_residual_parameters(model: nn.Module, widths: set[int]) -> dict:
    """Parameters owned by no standard layer whose last dim is a residual width (ViT class token, pos embedding)."""
    standard = (nn.Linear, nn.MultiheadAttention, nn.LayerNorm, nn.Embedding, nn.modules.conv._ConvNd,
                nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    found = {}
    for m in model.modules():
        if isinstance(m, standard):
            continue
        for p in m.parameters(recurse=False):
            if p.dim() >= 2 and p.shape[-1] in widths:
                found[p] = p.dim() - 1
    return found


# ---------------------------------------------------------------- head arithmetic

def _check_ratio(head_ratio: float) -> None:
    if not 0.0 <= head_ratio < 1.0:
        raise UserError(f"head ratio must be in [0, 1), got {head_ratio}", "e.g. --head-ratio 0.5 removes half the heads")


def _heads_to_remove(head_ratio: float, heads: int) -> int:
    """ceil(head_ratio * heads), as torch-pruning counts them, keeping at least one head.

    The same convention for every kind of attention block, so a ratio gives the architecture that
    torch-pruning builds by hand (rounding to the nearest count instead kept one head more than
    torch-pruning at 0.7 of 12 heads: a bigger, slower model than the by-hand one at the same ratio).
    """
    return min(math.ceil(round(head_ratio * heads, 6)), heads - 1)  # round(): 0.3 * 10 is 3.0000000000000004


def _ratio_for_ceil(head_ratio: float, heads: int) -> float:
    """A ratio r with ceil(r * heads) == _heads_to_remove(head_ratio, heads)."""
    return _ratio_removing(_heads_to_remove(head_ratio, heads), heads)


def _ratio_removing(n: int, heads: int) -> float:
    """A ratio r with ceil(r * heads) == n: what makes torch-pruning remove exactly n of `heads`."""
    return (n - 0.5) / heads if n > 0 else 0.0


def _mha_head_importance(mha: nn.MultiheadAttention, heads: int) -> torch.Tensor:
    """Squared L2 norm of each head's q/k/v rows and out_proj columns."""
    with torch.no_grad():
        w = mha.in_proj_weight.view(3, heads, -1, mha.embed_dim).pow(2).sum(dim=(0, 2, 3))
        o = mha.out_proj.weight.view(mha.embed_dim, heads, -1).pow(2).sum(dim=(0, 2))
        b = mha.in_proj_bias.view(3, heads, -1).pow(2).sum(dim=(0, 2)) if mha.in_proj_bias is not None else 0
    return w + o + b


def run_example(model: nn.Module, example_inputs):
    """model(example_inputs) the way torch-pruning calls it: a dict as keywords, a tuple/list as positionals."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def check_still_runs(model: nn.Module, example_inputs) -> None:
    """Fail early, with a hint, when head removal reached a fixed-width tensor such as a model input."""
    try:
        with torch.no_grad():
            run_example(model, example_inputs)
    except RuntimeError as exc:
        raise UserError(
            f"model no longer runs after removing MultiheadAttention heads: {str(exc).splitlines()[0]}",
            "nn.MultiheadAttention heads are tied to the residual width; it must not be a model input "
            "(put an embedding/projection layer first) or use head ratio 0",
        ) from exc


# ---------------------------------------------------------------- fix-ups

def _record(block: _Block, heads_after: int, head_dim: int) -> dict:
    return {"name": block.name, "heads_before": block.heads, "heads_after": heads_after, "head_dim": head_dim}


def _heads_from(width: int, head_dim: int, block: _Block) -> int:
    if width % head_dim:
        raise UserError(f"{block.name}: width {width} is not a whole number of heads of size {head_dim}",
                        "prune heads with prune_head_dims=False (plan.pruner_kwargs does)")
    return width // head_dim


def _fix_hf_bert(block: _Block, model: nn.Module) -> dict:
    m = block.module
    widths = {m.query.out_features, m.key.out_features, m.value.out_features}
    if len(widths) != 1:
        raise UserError(f"{block.name}: query/key/value widths differ after pruning: {sorted(widths)}", None)
    width = widths.pop()
    heads = _heads_from(width, block.head_dim, block)
    m.num_attention_heads = heads
    m.attention_head_size = block.head_dim
    m.all_head_size = width
    if hasattr(m, "scaling"):
        m.scaling = block.head_dim ** -0.5
    return _record(block, heads, block.head_dim)


def _fix_torch_mha(block: _Block, model: nn.Module) -> dict:
    m = block.module
    heads = _heads_from(m.embed_dim, block.head_dim, block)
    m.num_heads, m.head_dim = heads, block.head_dim
    m.kdim = m.vdim = m.embed_dim
    m._qkv_same_embed_dim = True
    # torchvision ViT keeps copies of the widths: EncoderBlock.num_heads and VisionTransformer.hidden_dim
    # (the latter is used in forward); fix any such int that still holds the old value.
    old_width = block.heads * block.head_dim
    for owner in model.modules():
        if owner is m:
            continue
        if any(child is m for child in owner.children()) and getattr(owner, "num_heads", None) == block.heads:
            owner.num_heads = heads
        if getattr(owner, "hidden_dim", None) == old_width and m.embed_dim != old_width:
            owner.hidden_dim = m.embed_dim
    return _record(block, heads, block.head_dim)


def _fix_timm_vit(block: _Block, model: nn.Module) -> dict:
    """Set the module's own head attributes, so its own forward keeps working (timm >= 1.0 reads attn_dim).

    Only an attention without ``attn_dim`` (older timm, which reshapes the heads' output to the INPUT width)
    gets a replacement forward; it takes every argument timm's forward takes (attn_mask, is_causal).
    """
    m = block.module
    heads = _heads_from(m.qkv.out_features // 3, block.head_dim, block)
    m.num_heads, m.head_dim = heads, block.head_dim
    if hasattr(m, "attn_dim"):
        m.attn_dim = heads * block.head_dim
    elif heads != block.heads and not getattr(m, "_p2d_forward", False):
        m.forward = types.MethodType(_timm_attention_forward, m)
        m._p2d_forward = True
    return _record(block, heads, block.head_dim)


def _timm_attention_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                            is_causal: bool = False) -> torch.Tensor:
    """Pre-attn_dim timm Attention.forward with the output reshaped to num_heads*head_dim."""
    B, N, _ = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = getattr(self, "q_norm", nn.Identity())(q), getattr(self, "k_norm", nn.Identity())(k)
    drop = getattr(self, "attn_drop", None)
    p = drop.p if (drop is not None and self.training) else 0.0
    if getattr(self, "fused_attn", False):
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
    else:
        attn = (q * getattr(self, "scale", self.head_dim ** -0.5)) @ k.transpose(-2, -1)
        if is_causal:
            causal = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
            attn_mask = causal if attn_mask is None else attn_mask & causal if attn_mask.dtype == torch.bool \
                else attn_mask.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            attn = attn + attn_mask if attn_mask.dtype != torch.bool else attn.masked_fill(~attn_mask, float("-inf"))
        attn = attn.softmax(dim=-1)
        x = (drop(attn) if drop is not None else attn) @ v
    x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
    x = getattr(self, "norm", nn.Identity())(x)
    x = self.proj(x)
    return getattr(self, "proj_drop", nn.Identity())(x)


_FIXERS = {"hf-bert": _fix_hf_bert, "torch-mha": _fix_torch_mha, "timm-vit": _fix_timm_vit}


def _sync_hf_config(model: nn.Module, blocks: list) -> None:
    """Set config.num_attention_heads when every HF block agrees; otherwise each module keeps its own."""
    heads = {b.module.num_attention_heads for b in blocks if b.kind == "hf-bert"}
    config = getattr(model, "config", None)
    if len(heads) == 1 and config is not None and hasattr(config, "num_attention_heads"):
        config.num_attention_heads = heads.pop()
