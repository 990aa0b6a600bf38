"""Losses that pull the pruned student back to the dense teacher.

Classifiers (first output 2-D class scores): Hinton's KL on temperature-softened logits, times T^2 so its
gradient scale does not depend on T, mixed with cross-entropy on labels when there are labels:
    loss = kd_alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - kd_alpha) * CE(s, labels)
Other outputs (encoders, detectors, ...): every float output is matched to the teacher's, by cosine distance
over the last axis (default) or MSE. Intermediate layers whose output shapes pruning kept are matched as well
(FeatureMatcher): token features [batch, tokens, hidden] like the output (cosine per token, padding
excluded), others by MSE. Which layers: --kd-feature names them; by default (`matched_blocks`) an encoder's
every block (each layer's hidden state: the residual stream keeps its width), none for a classifier.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from prune2deploy.errors import user_error
from prune2deploy.model.outputs import flatten_outputs

OUTPUT_LOSSES = ("cosine", "mse")


def is_classifier_output(t: torch.Tensor) -> bool:
    return t.dim() == 2 and t.shape[1] > 1 and t.dtype.is_floating_point


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None,
            alpha: float = 0.7, temperature: float = 2.0) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels); KL alone without labels."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    if labels is None:
        return kl
    return alpha * kl + (1.0 - alpha) * F.cross_entropy(student, labels)


def output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine distance (1 - cos over the last axis, averaged; over the tokens `mask` keeps for a [batch, tokens,
    hidden] output with an attention mask) or mean squared error."""
    if kind == "cosine":
        s, t = student.float(), teacher.float()
        if s.dim() == 1:
            s, t = s.unsqueeze(0), t.unsqueeze(0)
        distance = 1.0 - F.cosine_similarity(s, t, dim=-1)
        if mask is not None and s.dim() == 3 and tuple(mask.shape) == tuple(distance.shape):
            weights = mask.to(distance.dtype)
            return (distance * weights).sum() / weights.sum().clamp(min=1.0)
        return distance.mean()
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    raise user_error(f"unknown output loss {kind!r}", f"use one of {', '.join(OUTPUT_LOSSES)}")


class DistillLoss:
    """The recovery objective for one batch: `method` kd (teacher) or finetune (labels only)."""

    def __init__(self, method: str = "kd", alpha: float = 0.7, temperature: float = 2.0,
                 output_kind: str = "cosine"):
        self.method, self.alpha, self.temperature, self.output_kind = method, alpha, temperature, output_kind

    def __call__(self, student_out, teacher_out, labels: torch.Tensor | None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask`: the batch's attention_mask, if any (padding tokens are not matched)."""
        s_flat = [t for _, t in flatten_outputs(student_out) if t.dtype.is_floating_point]
        first = s_flat[0]
        if self.method == "finetune":
            if labels is None or not is_classifier_output(first):
                raise user_error("--recover finetune needs labels and a model whose first output is class scores",
                                 "use --recover kd (distillation from the dense model) instead")
            return F.cross_entropy(first, labels)
        t_flat = [t for _, t in flatten_outputs(teacher_out) if t.dtype.is_floating_point]
        if is_classifier_output(first):
            return kd_loss(first, t_flat[0].detach(), labels, self.alpha, self.temperature)
        losses = [output_loss(s, t.detach(), self.output_kind, mask) for s, t in zip(s_flat, t_flat)
                  if s.shape == t.shape]
        return torch.stack(losses).mean()


NO_FEATURES = "none"  # --kd-feature none: match the outputs only


def matched_blocks(student: nn.Module, teacher: nn.Module, inputs, requested: list[str]) -> list[str]:
    """The layers to match: `requested` (--kd-feature), none for `none` or a classifier, else the blocks of the
    model's longest stack of like blocks (e.g. encoder.layer.0..5) whose output shape pruning kept."""
    if requested:
        return [] if requested == [NO_FEATURES] else list(requested)
    with torch.no_grad():
        first = [t for _, t in flatten_outputs(inputs.call(teacher)) if t.dtype.is_floating_point]
    if not first or is_classifier_output(first[0]):
        return []
    stack = max(_block_stacks(teacher), key=len, default=[])
    if not stack:
        return []
    names = [name for name, _ in stack]
    was_training = student.training
    student.eval()  # no BatchNorm statistics change while looking at shapes
    with FeatureMatcher(student, teacher, names).capture() as matcher, torch.no_grad():
        inputs.call(student), inputs.call(teacher)
        shapes = {n: (matcher.student_feats.get(n), matcher.teacher_feats.get(n)) for n in names}
    student.train(was_training)
    return [n for n, (s, t) in shapes.items() if s is not None and t is not None and s.shape == t.shape]


def _block_stacks(model: nn.Module) -> list[list[tuple[str, nn.Module]]]:
    """Containers of two or more blocks of one class (transformer layers, residual stages' blocks)."""
    from prune2deploy.passes.block_local import CONTAINERS, is_block

    stacks = []
    for name, m in model.named_modules():
        children = list(m.named_children())
        if type(m) in CONTAINERS and len(children) >= 2 and len({type(c) for _, c in children}) == 1 \
                and is_block(children[0][1]):
            stacks.append([(f"{name}.{child}" if name else child, c) for child, c in children])
    return stacks


@contextmanager
def capture_pairs(matcher, layers: list[tuple[str, nn.Module, nn.Module]], pick=lambda output: output):
    """Forward hooks storing pick(output) of each (name, student layer, teacher layer) in the matcher's
    student_feats / teacher_feats under `name`, removed on exit; yields the matcher."""
    def hook(store, name):
        def fn(_module, _inputs, output):
            value = pick(output)
            if value is not None:
                store[name] = value
        return fn
    handles = []
    for name, s, t in layers:
        handles.append(s.register_forward_hook(hook(matcher.student_feats, name)))
        handles.append(t.register_forward_hook(hook(matcher.teacher_feats, name)))
    try:
        yield matcher
    finally:
        for h in handles:
            h.remove()


class FeatureMatcher:
    """Distance between the outputs of named layers in student and teacher (layers whose width pruning kept)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, names: list[str]):
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        missing = [n for n in names if n not in s_mods or n not in t_mods]
        if missing:
            raise user_error(f"--kd-feature {missing[0]}: the model has no layer of that name",
                             "run `p2d inspect MODEL` to list layer names")
        self.names = list(names)
        self.pairs = [(s_mods[n], t_mods[n]) for n in names]
        self.student_feats: dict[str, torch.Tensor] = {}
        self.teacher_feats: dict[str, torch.Tensor] = {}

    def capture(self):
        """While the block runs, each named layer's first output tensor goes to student_feats / teacher_feats."""
        def first_tensor(output):
            tensors = flatten_outputs(output)
            return tensors[0][1] if tensors else None
        return capture_pairs(self, [(n, s, t) for n, (s, t) in zip(self.names, self.pairs)], first_tensor)

    def loss(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the layers: cosine per token for [batch, tokens, hidden] features (`mask`: the attention
        mask, padding excluded), MSE for any other shape."""
        terms = []
        for name in self.names:
            s, t = self.student_feats.get(name), self.teacher_feats.get(name)
            if s is None or t is None:
                continue
            if s.shape != t.shape:
                raise user_error(f"--kd-feature {name}: pruning changed its output shape "
                                 f"{list(t.shape)} -> {list(s.shape)}",
                                 "match a layer pruning kept at full width (e.g. a block output or the last layer)")
            tokens = s.dim() == 3 and mask is not None and tuple(mask.shape) == tuple(s.shape[:2])
            terms.append(output_loss(s, t.detach(), "cosine", mask) if tokens else F.mse_loss(s.float(), t.detach().float()))
        self.student_feats.clear()
        self.teacher_feats.clear()
        return torch.stack(terms).mean() if terms else torch.zeros(())
