"""Structured channel pruning through torch-pruning's DependencyGraph: channels are physically removed."""
from __future__ import annotations

import difflib

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import P2DError, user_error
from ..inputs import random_like
from ..outputs import flatten_outputs, output_shapes

CRITERIA = ("l1", "l2", "bn-scale", "taylor", "hessian", "random")
GRADIENT_CRITERIA = ("taylor", "hessian")


def make_importance(criterion: str):
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn-scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "hessian":
        return tp.importance.GroupHessianImportance()
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise user_error(f"unknown criterion {criterion!r}", f"use one of {', '.join(CRITERIA)}")


def layer_widths(model: nn.Module) -> dict[str, dict]:
    """Input/output widths of every conv and linear layer, by qualified name."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = {"type": type(m).__name__, "in": m.in_channels, "out": m.out_channels}
        elif isinstance(m, nn.Linear):
            widths[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
    return widths


def resolve_layers(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "run `p2d inspect MODEL` to list layer names"
            raise user_error(f"--ignore {name}: the model has no layer of that name", hint)
        found.append(modules[name])
    return found


def output_layers(DG) -> list[nn.Module]:
    """The prunable layers whose output channels reach the model's outputs (walking back from the sinks)."""
    producers, seen = [], set()
    stack = [node for node in DG.module2node.values() if not node.outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        m = node.module
        pruner = DG.get_pruner_of_module(m) if isinstance(m, nn.Module) else None
        if pruner is not None and not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)) \
                and pruner.get_out_channels(m) is not None:
            producers.append(m)
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            producers.append(m)  # a norm on the output keeps its width too; its inputs share the group
        stack.extend(node.inputs)
    return producers


class PruneChannels:
    """Remove a ratio of channels (and whole attention heads) by importance, aligned to round_to."""

    name = "prune_channels"

    def __init__(self, ratio: float, criterion: str = "l1", global_pruning: bool = False,
                 iterative_steps: int = 1, round_to: int | None = None, ignore: list[str] = (),
                 head_ratio: float | None = None):
        if not 0.0 <= ratio < 1.0:
            raise user_error(f"--ratio {ratio} is outside [0, 1)", "e.g. --ratio 0.5 removes half the channels")
        if criterion not in CRITERIA:
            raise user_error(f"unknown criterion {criterion!r}", f"use one of {', '.join(CRITERIA)}")
        if iterative_steps < 1:
            raise user_error(f"--iterative-steps {iterative_steps} must be >= 1")
        if round_to is not None and round_to < 1:
            raise user_error(f"--round-to {round_to} must be >= 1")
        self.ratio, self.criterion, self.global_pruning = ratio, criterion, global_pruning
        self.iterative_steps, self.round_to, self.ignore = iterative_steps, round_to, list(ignore)
        self.head_ratio = ratio if head_ratio is None else head_ratio
        self.on_step = None  # callable(model, step): between iterative steps (prune -> recover -> prune ...)

    def run(self, model: nn.Module, ctx) -> dict:
        from .attention import plan_attention

        inputs = ctx.example_inputs
        was_training = model.training
        ignored = resolve_layers(model, self.ignore)
        before = layer_widths(model)
        shapes_before = output_shapes(_forward(model, inputs))
        attention = plan_attention(model)
        attention.prune_heads(model, inputs.kwargs or inputs.args, self.head_ratio)  # MHA: torch-pruning can't
        importance = make_importance(self.criterion)
        pruner = tp.pruner.BasePruner(
            model, example_inputs=inputs.kwargs or inputs.args, importance=importance,
            pruning_ratio=self.ratio, global_pruning=self.global_pruning,
            iterative_steps=self.iterative_steps, round_to=self.round_to,
            ignored_layers=ignored + list(attention.ignored_layers),
            **attention.pruner_kwargs(self.head_ratio))
        kept = output_layers(pruner.DG)
        pruner.ignored_layers.extend(m for layer in kept for m in layer.modules())
        for step in range(self.iterative_steps):
            if self.criterion in GRADIENT_CRITERIA:
                accumulate_gradients(model, importance, self.criterion, ctx)
            pruner.step()
            if self.on_step and step < self.iterative_steps - 1:  # the last step's hook is the next pass
                attention.fix_up(model)
                self.on_step(model, step)
        model.zero_grad(set_to_none=True)
        heads = attention.fix_up(model)
        model.train(was_training)  # torch-pruning leaves some submodules in training mode
        self._shapes_before = shapes_before
        after = layer_widths(model)
        return {
            "ratio": self.ratio, "criterion": self.criterion, "global": self.global_pruning,
            "iterative_steps": self.iterative_steps, "round_to": self.round_to,
            "ignored": self.ignore, "kept_for_outputs": _names(model, kept),
            "attention": {"kind": attention.kind, "blocks": heads},
            "layers": [{"name": n, **{f"{k}_before": v for k, v in w.items() if k != "type"},
                        **{f"{k}_after": v for k, v in after.get(n, w).items() if k != "type"},
                        "type": w["type"]} for n, w in before.items()],
        }

    def ensure(self, model: nn.Module, ctx) -> None:
        try:
            shapes_after = output_shapes(_forward(model, ctx.example_inputs))
        except Exception as exc:
            raise P2DError(f"the pruned model no longer runs: {str(exc).splitlines()[0][:200]}",
                           "--ignore the layers named in the error, or lower --ratio") from exc
        if shapes_after != self._shapes_before:
            raise P2DError(f"pruning changed the output shapes: {self._shapes_before} -> {shapes_after}",
                           "--ignore the layer that produces that output")
        record = ctx.records.get(self.name, {})
        if self.round_to:
            for layer in record.get("layers", []):
                for side in ("in", "out"):
                    after, before = layer[f"{side}_after"], layer[f"{side}_before"]
                    if after != before and after % self.round_to:
                        raise P2DError(f"{layer['name']}: pruned {side} width {after} is not a multiple of "
                                       f"round_to={self.round_to}")


def _forward(model, inputs):
    with torch.no_grad():
        return inputs.call(model)


def _names(model, modules) -> list[str]:
    index = {id(m): n for n, m in model.named_modules()}
    return sorted(index[id(m)] for m in modules if id(m) in index)


def calibration_batches(ctx) -> list:
    """[(inputs, labels or None)]: --calib-data when given, else the example inputs and 3 random batches."""
    if ctx.calib_batches:
        return ctx.calib_batches
    return [(ctx.example_inputs, None)] + [(random_like(ctx.example_inputs, seed=100 + i), None) for i in range(3)]


def _loss(output, labels, reference):
    """Cross-entropy on labels (or the dense model's own top-1 as pseudo-labels); else output energy."""
    out = flatten_outputs(output)[0][1]
    if out.dim() == 2 and out.shape[1] > 1 and out.dtype.is_floating_point:
        target = labels if labels is not None else reference.argmax(1)
        return nn.functional.cross_entropy(out, target)
    return 0.5 * out.float().pow(2).mean()


def accumulate_gradients(model, importance, criterion: str, ctx) -> None:
    """Fill .grad for Taylor (batch loss) or Hessian (per-sample loss, accumulated by the importance)."""
    model.zero_grad(set_to_none=True)
    if criterion == "hessian":
        importance.zero_grad()
    was_training = model.training
    model.eval()
    for inputs, labels in calibration_batches(ctx):
        with torch.no_grad():
            reference = flatten_outputs(inputs.call(model))[0][1]
        output = inputs.call(model)
        if criterion == "taylor":
            _loss(output, labels, reference).backward()
            continue
        out = flatten_outputs(output)[0][1]
        for i in range(out.shape[0]):
            model.zero_grad(set_to_none=True)
            sample_labels = labels[i:i + 1] if labels is not None else None
            _loss(out[i:i + 1], sample_labels, reference[i:i + 1]).backward(retain_graph=True)
            importance.accumulate_grad(model)
    model.train(was_training)

