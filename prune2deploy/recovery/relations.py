"""Self-attention relation distillation (MiniLMv2, Wang et al. 2021): in every attention block of a BERT-style
encoder (a module with `query`, `key` and `value` Linear layers), the student's query-query, key-key and
value-value relations softmax(x_r x_r^T / sqrt(d_r)) are pulled to the teacher's by KL, per relation head r.
The projections are split into `heads` relation heads whatever the block's own head count, so a block pruned to
fewer heads is still comparable with the dense one (--kd-relations N; the widths must divide by N).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from prune2deploy.errors import user_error
from prune2deploy.recovery.distill import capture_pairs

PROJECTIONS = ("query", "key", "value")


def attention_blocks(model: nn.Module) -> list[str]:
    """Names of the modules holding `query`, `key` and `value` Linear layers (BERT's self-attention)."""
    return [name for name, m in model.named_modules()
            if all(isinstance(getattr(m, p, None), nn.Linear) for p in PROJECTIONS)]


class RelationMatcher:
    """KL between teacher and student self-attention relations of every attention block, `heads` relation heads."""

    def __init__(self, student: nn.Module, teacher: nn.Module, heads: int):
        blocks = attention_blocks(teacher)
        if not blocks or blocks != attention_blocks(student):
            raise user_error("--kd-relations needs a BERT-style encoder (attention blocks with query, key and value "
                             "layers)", "leave --kd-relations at 0 for this model")
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        for name in blocks:
            for model_mods in (s_mods, t_mods):
                width = getattr(model_mods[name], "query").out_features
                if width % heads:
                    raise user_error(f"--kd-relations {heads}: {name} projects to {width} features, not a multiple "
                                     f"of {heads}", "use a number of relation heads that divides every block's width "
                                     "after pruning (e.g. 4)")
        self.heads = heads
        self.layers = [(f"{name}.{p}", getattr(s_mods[name], p), getattr(t_mods[name], p))
                       for name in blocks for p in PROJECTIONS]
        self.student_feats: dict[str, torch.Tensor] = {}
        self.teacher_feats: dict[str, torch.Tensor] = {}

    def capture(self):
        """While the block runs, the query/key/value projections go to student_feats / teacher_feats."""
        return capture_pairs(self, self.layers)

    def loss(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over blocks and projections of KL(teacher relation || student relation), over real tokens."""
        terms = [relation_kl(self.student_feats[name], self.teacher_feats[name].detach(), self.heads, mask)
                 for name, _, _ in self.layers if name in self.student_feats and name in self.teacher_feats]
        self.student_feats.clear()
        self.teacher_feats.clear()
        return torch.stack(terms).mean() if terms else torch.zeros(())


def _log_relation(x: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    batch, tokens, width = x.shape
    x = x.float().view(batch, tokens, heads, width // heads).transpose(1, 2)  # [batch, heads, tokens, d]
    logits = x @ x.transpose(-1, -2) / (width // heads) ** 0.5
    if mask is not None:
        logits = logits.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(logits.dtype).min)
    return F.log_softmax(logits, dim=-1)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, heads: int,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) of the [batch, tokens, width] projections' relations, split into `heads`; averaged
    over relation heads and the query tokens `mask` keeps (padding keys get no probability in either)."""
    s, t = _log_relation(student, heads, mask), _log_relation(teacher, heads, mask)
    kl = (t.exp() * (t - s)).sum(-1)  # [batch, heads, tokens]
    if mask is None:
        return kl.mean()
    weights = mask.to(kl.dtype)[:, None, :].expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp(min=1.0)
