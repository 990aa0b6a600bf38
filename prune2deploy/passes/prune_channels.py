"""Structured channel pruning through torch-pruning's DependencyGraph: channels are physically removed."""
from __future__ import annotations

import difflib

import torch
import torch.nn as nn
import torch_pruning as tp

from prune2deploy.config.values import CRITERIA, PRUNING_MODES as MODES
from prune2deploy.errors import P2DError, user_error
from prune2deploy.model.inputs import random_like
from prune2deploy.model.outputs import flatten_outputs, output_shapes
from prune2deploy.passes.block_local import prune_blocks
from prune2deploy.passes.degrade import Snapshot, first_line, prune_group_by_group
from prune2deploy.passes.importance import MagnitudeImportance
from prune2deploy.passes.graph_budget import (
    DEFAULT_GB, DEFAULT_SECONDS, GraphBudget, GraphTooCostly, release_trace
)

GRADIENT_CRITERIA = ("taylor", "hessian")


def make_importance(criterion: str):
    if criterion == "l1":
        return MagnitudeImportance(p=1)
    if criterion == "l2":
        return MagnitudeImportance(p=2)
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


BLOCK_BUDGET_SHARE = 3  # a block's graph gets a third of the whole model's time budget


class PruneChannels:
    """Remove a ratio of channels (and whole attention heads) by importance, aligned to round_to.

    The whole model's dependency graph is built under a budget (graph_budget_s seconds, graph_budget_gb GB);
    when it is too costly or cannot be built, mode "auto" prunes block by block and mode "global" refuses;
    "block-local" never builds the whole graph. Groups whose pruning breaks
    the model are left unpruned and listed in the record's `skipped`.
    """

    name = "prune_channels"

    def __init__(self, ratio: float, criterion: str = "l1", global_pruning: bool = False,
                 iterative_steps: int = 1, round_to: int | None = None, ignore: list[str] = (),
                 head_ratio: float | None = None, mode: str = "auto",
                 graph_budget_s: float = DEFAULT_SECONDS, graph_budget_gb: float = DEFAULT_GB):
        if not 0.0 <= ratio < 1.0:
            raise user_error(f"--ratio {ratio} is outside [0, 1)", "e.g. --ratio 0.5 removes half the channels")
        if criterion not in CRITERIA:
            raise user_error(f"unknown criterion {criterion!r}", f"use one of {', '.join(CRITERIA)}")
        if iterative_steps < 1:
            raise user_error(f"--iterative-steps {iterative_steps} must be >= 1")
        if round_to is not None and round_to < 1:
            raise user_error(f"--round-to {round_to} must be >= 1")
        if mode not in MODES:
            raise user_error(f"unknown pruning mode {mode!r}", f"use one of {', '.join(MODES)}")
        self.ratio, self.criterion, self.global_pruning = ratio, criterion, global_pruning
        self.iterative_steps, self.round_to, self.ignore = iterative_steps, round_to, list(ignore)
        self.head_ratio = ratio if head_ratio is None else head_ratio
        self.mode, self.graph_budget_s, self.graph_budget_gb = mode, graph_budget_s, graph_budget_gb
        self.on_step = None  # callable(model, step): between iterative steps (prune -> recover -> prune ...)

    def run(self, model: nn.Module, ctx) -> dict:
        inputs = ctx.example_inputs
        was_training = model.training
        ignored = resolve_layers(model, self.ignore)
        ties = tied_layers(model)
        modules = dict(model.named_modules(remove_duplicate=False))
        self._ties = [[modules[n] for n in names] for names in ties]  # the check rolls back groups that untie them
        before = layer_widths(model)
        # the dense output shapes; torch-pruning's first trace records them when it calls the model as `inputs` do
        traced_as_called = not (inputs.args and inputs.kwargs)
        self._shapes_before = None if traced_as_called else output_shapes(_forward(model, inputs))
        outcome = None if self.mode == "block-local" else self._prune_global(model, ctx, ignored)
        if outcome is None or "fallback" in outcome:  # the model is as it came (a fallback restores it)
            if self._shapes_before is None:
                self._shapes_before = output_shapes(_forward(model, inputs))
            fallback = outcome["fallback"] if outcome else "--pruning-mode block-local"
            outcome = self._prune_block_local(model, ctx, ignored)
            outcome["why"] = fallback
        model.zero_grad(set_to_none=True)
        model.train(was_training)  # torch-pruning leaves some submodules in training mode
        _refuse_if_nothing_pruned(outcome, self.ratio, model)
        if _untied(self._ties):
            raise P2DError(f"pruning untied weights that {', '.join(ties[0])} share")
        after = layer_widths(model)
        return {
            "ratio": self.ratio, "criterion": self.criterion, "global": self.global_pruning,
            "iterative_steps": self.iterative_steps, "round_to": self.round_to,
            "ignored": self.ignore, "kept_for_outputs": outcome["kept"],
            "pruning_mode": outcome["mode"], "pruning_mode_reason": outcome.get("why"),
            "skipped": outcome["skipped"], "blocks": outcome.get("blocks"),
            "split_blocks": outcome.get("split_blocks"),
            "attention": {"kind": outcome["attention_kind"], "blocks": outcome["heads"]},
            "layers": [{"name": n, **{f"{k}_before": v for k, v in w.items() if k != "type"},
                        **{f"{k}_after": v for k, v in after.get(n, w).items() if k != "type"},
                        "type": w["type"]} for n, w in before.items()],
        }

    def _graph(self, module: nn.Module, example, ignored: list, importance=None):
        """Attention plan (MHA heads already removed), a BasePruner over `module` (outputs kept at width), and
        `module`'s output shapes before anything was removed, read off torch-pruning's first trace (removing
        heads must keep them: the second trace says)."""
        from prune2deploy.passes.attention import check_still_runs, plan_attention, run_example

        traced = []

        def forward_and_keep_shapes(model, inputs):  # torch-pruning's own call, keeping the output shapes
            out = run_example(model, inputs)
            traced.append(output_shapes(out))
            return out

        attention = plan_attention(module)
        heads_removed = attention.prune_heads(module, example, self.head_ratio, check_runs=False,  # MHA: tp can't
                                              forward_fn=forward_and_keep_shapes)

        try:  # the trace runs the model: it is the check that head removal left it runnable
            pruner = tp.pruner.BasePruner(
                module, example_inputs=example, forward_fn=forward_and_keep_shapes, importance=importance or make_importance(self.criterion),
                pruning_ratio=self.ratio, global_pruning=self.global_pruning,
                iterative_steps=self.iterative_steps, round_to=self.round_to,
                ignored_layers=ignored + list(attention.ignored_layers),
                **self.pruner_kwargs(attention))
            attention.schedule_heads(pruner, self.head_ratio, self.iterative_steps)
        except Exception:
            if heads_removed:
                check_still_runs(module, example)  # the head removal's own error and hint, if it broke the model
            raise
        if heads_removed and traced[-1] != traced[0]:
            raise user_error(f"removing attention heads changed the model's output shapes ({traced[0]} -> "
                             f"{traced[-1]}): its output is the attention blocks' own width",
                             "keep the heads with --head-ratio 0 (the other layers are still pruned), or add an "
                             "output layer after the last block")
        kept = output_layers(pruner.DG)
        pruner.ignored_layers.extend(m for layer in kept for m in layer.modules())
        return attention, pruner, kept, traced[0]

    def pruner_kwargs(self, attention) -> dict:
        """BasePruner's attention keywords; search.prune_to adds per-group ratios here."""
        return attention.pruner_kwargs(self.head_ratio)

    def _steps(self, module, pruner, ctx, check, attention=None) -> tuple[int, list[dict]]:
        """All pruning steps; group by group with rollback when `check` is given.

        With `attention` (the whole model's graph), `on_step` runs between steps (prune -> recover -> prune).
        Returns (groups pruned, skipped groups); without `check` every group counts as pruned.
        """
        pruned, skipped = 0, []
        for step in range(self.iterative_steps):
            if step and self.on_step and attention is not None:  # the last step's hook is the next pass
                attention.fix_up(module)
                self.on_step(module, step - 1)
            if self.criterion in GRADIENT_CRITERIA and ctx is not None:
                accumulate_gradients(module, pruner.importance, self.criterion, ctx)
            if check is None:
                for group in pruner.step(interactive=True):
                    group.prune()
                    pruned += 1
            else:
                done, failed = prune_group_by_group(pruner.step(interactive=True), module, check)
                pruned, skipped = pruned + done, skipped + failed
        return pruned, skipped

    def _prune_global(self, model, ctx, ignored) -> dict:
        """The whole model's graph, within the budget; {"fallback": why} when it is too costly or cannot be
        built (mode auto; mode global refuses instead)."""
        inputs = ctx.example_inputs
        example = inputs.kwargs or inputs.args
        snapshot = Snapshot(model)
        try:
            with GraphBudget(self.graph_budget_s, self.graph_budget_gb, "the whole model's dependency graph"):
                attention, pruner, kept, traced_shapes = self._graph(model, example, ignored)
                self._shapes_before = self._shapes_before or traced_shapes
        except (GraphTooCostly, Exception) as exc:
            if isinstance(exc, P2DError):
                raise
            snapshot.restore()
            return {"fallback": whole_graph_failure(exc, self.mode)}
        check = self._checker(model, inputs, attention, self._shapes_before)
        try:
            pruned = self._steps(model, pruner, ctx, None, attention)[0]
            broken = check()
        except P2DError:
            raise
        except Exception as exc:
            broken = f"torch-pruning: {first_line(exc)}"
        release_trace(pruner.DG)
        skipped = []
        if broken:  # find the groups responsible: prune again one group at a time, keeping those that work
            snapshot.restore()
            try:
                attention, pruner, kept, _ = self._graph(model, example, ignored)
            except P2DError:
                raise
            except Exception as exc:  # the restored model cannot be traced again: no group-by-group retry
                snapshot.restore()
                why = f"pruning broke the model ({broken}) and its graph could not be traced again ({first_line(exc)})"
                if self.mode == "auto":
                    return {"fallback": why}
                raise user_error(f"nothing could be pruned (--pruning-mode global): {why}",
                                 "try --pruning-mode block-local, or --ignore the layer named") from None
            pruned, skipped = self._steps(model, pruner, ctx, self._checker(model, inputs, attention, self._shapes_before),
                                          attention)
            release_trace(pruner.DG)
            if not pruned and skipped and self.mode == "auto":
                snapshot.restore()
                first = skipped[0]
                return {"fallback": f"the whole model's graph could prune nothing ({first['group']}: {first['reason']})"}
        heads = attention.fix_up(model)
        return {"mode": "global graph", "skipped": attention.kept + skipped, "pruned": pruned > 0, "kept": _names(model, kept),
                "attention_kind": attention.kind, "heads": heads}

    def _prune_block_local(self, model, ctx, ignored) -> dict:
        """Prune inside each block, tracing the block alone; the blocks' outputs keep their width."""
        importance = make_importance(self.criterion)  # one for all blocks: Hessian keeps what it accumulated
        if self.criterion in GRADIENT_CRITERIA:
            accumulate_gradients(model, importance, self.criterion, ctx)
        kinds, heads, skipped, kept = [], [], [], []
        block_names = {id(m): n for n, m in model.named_modules()}
        pruned = []

        def prune_one(block, args, kwargs):
            attention, pruner, block_kept, _ = self._graph(block, kwargs or args, ignored, importance)
            check = self._checker(block, _Call(args, kwargs), attention)
            prefix = block_names[id(block)]
            count, block_skipped = self._steps(block, pruner, ctx=None, check=check)
            release_trace(pruner.DG)
            pruned.append(count)
            skipped.extend({**item, "group": f"{prefix}.{item['group']}"} for item in block_skipped)
            heads.extend({**h, "name": f"{prefix}.{h['name']}"} for h in attention.fix_up(block))
            kinds.append(attention.kind)
            kept.extend(f"{prefix}.{n}" for n in _names(block, block_kept))

        from prune2deploy.passes.attention import plan_attention

        whole = plan_attention(model)  # attention whose heads stay is reported, never traced
        held = {id(m): item["reason"] for m, item in zip(whole.kept_modules, whole.kept)}
        record = prune_blocks(model, ctx.example_inputs, prune_one, self.graph_budget_s / BLOCK_BUDGET_SHARE,
                              self.graph_budget_gb, held)
        kinds = [k for k in dict.fromkeys(kinds) if k != "none"]
        return {"mode": "block-local", "skipped": record["skipped"] + skipped, "pruned": sum(pruned) > 0,
                "blocks": record["blocks"], "split_blocks": record["split"], "kept": sorted(kept), "attention_kind": ",".join(kinds) or "none",
                "heads": heads}

    def _checker(self, module, inputs, attention, shapes_before=None):
        """check() -> why `module` is broken now (fails to run, output shapes changed, a pruned width off
        --round-to: torch-pruning lost track of a slice, as in GhostNet's concat-then-slice), or None.

        `shapes_before`: the unpruned output shapes when already known (the whole model's, taken by `run`);
        else `module` runs once to take them."""
        if shapes_before is None:
            shapes_before = output_shapes(_forward(module, inputs))
        widths_before = layer_widths(module)

        def check() -> str | None:
            try:
                attention.fix_up(module)
                shapes = output_shapes(_forward(module, inputs))
            except Exception as exc:
                return f"the pruned model no longer runs: {first_line(exc)}"
            if shapes != shapes_before:
                return f"output shapes changed: {shapes_before} -> {shapes}"
            if _untied(getattr(self, "_ties", [])):
                return "it would untie a weight tensor that layers share (tied weights keep their width together)"
            return misaligned_width(widths_before, layer_widths(module), self.round_to)
        return check

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
        layers = record.get("layers", [])
        off = misaligned_width({x["name"]: {"in": x["in_before"], "out": x["out_before"]} for x in layers},
                               {x["name"]: {"in": x["in_after"], "out": x["out_after"]} for x in layers},
                               self.round_to)
        if off:
            raise P2DError(off)


def misaligned_width(before: dict, after: dict, round_to: int | None) -> str | None:
    """The first layer whose pruned width is not a multiple of round_to, said in words; None if all are."""
    if not round_to:
        return None
    for name, widths in after.items():
        for side in ("in", "out"):
            width = widths[side]
            if name in before and width != before[name][side] and width % round_to:
                return f"{name}: pruned {side} width {width} is not a multiple of round_to={round_to}"
    return None


def whole_graph_failure(exc: BaseException, mode: str) -> str:
    """Why the whole model's graph could not be used (budget or tracing); mode "global" refuses instead."""
    why = str(exc) if isinstance(exc, GraphTooCostly) else \
        f"torch-pruning cannot trace the whole model ({first_line(exc)})"
    if mode == "global":
        raise user_error(f"global pruning is not possible: {why}",
                         "use --pruning-mode auto (block-local), or --ignore the layers involved") from exc
    return why


class _Call:
    """Positional and keyword inputs of one block call, with the `call` of ExampleInputs."""

    def __init__(self, args, kwargs):
        self.args, self.kwargs = args, kwargs

    def call(self, module):
        return module(*self.args, **self.kwargs)


def tied_layers(model: nn.Module) -> list[list[str]]:
    """Layers that share a parameter tensor (`b.weight = a.weight`), as lists of module names."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            names = owners.setdefault(id(param), [])
            if name not in names:
                names.append(name)
    return [names for names in owners.values() if len(names) > 1]


def _untied(ties: list[list[nn.Module]]) -> list[nn.Module] | None:
    """The first tie whose modules no longer share a parameter tensor (torch-pruning replaces what it prunes)."""
    for modules in ties:
        if not set.intersection(*({id(p) for p in m.parameters(recurse=False)} for m in modules)):
            return modules
    return None


def _refuse_if_nothing_pruned(outcome: dict, ratio: float, model: nn.Module) -> None:
    """One line, exit 2, when pruning was asked for and every group (or block) had to be left alone."""
    if outcome["pruned"] or ratio == 0:
        return
    if outcome["skipped"]:
        first = outcome["skipped"][0]
        why = f"{first['group']}: {first['reason']}"
        hint = f"--ignore {first['group']}" if first["group"] in dict(model.named_modules()) else \
            "--ignore the layers named"
        raise user_error(f"nothing could be pruned ({outcome['mode']}): {why}",
                         f"{hint}, or pass a model whose blocks torch-pruning can trace")
    if outcome["mode"] != "block-local":
        return
    why = f"{outcome.get('why')}, and the model has no block of two or more layers to prune on its own"
    recurrent = [f"{name} ({type(m).__name__})" for name, m in model.named_modules()
                 if isinstance(m, nn.RNNBase) and type(m) is not nn.LSTM]
    if recurrent:  # the trace fails on them whatever --ignore says
        raise user_error(f"nothing could be pruned: torch-pruning cannot trace {', '.join(recurrent)}; {why}",
                         "compile the part of the model before that layer (a module:callable returning it)")
    raise user_error(f"nothing could be pruned ({outcome['mode']}): {why}",
                     "pass a model whose blocks torch-pruning can trace (p2d inspect MODEL shows what it finds)")


def skipped_warnings(record: dict) -> list[str]:
    """What the user must hear on stderr: a fallback to block-local pruning, and every group left unpruned."""
    lines = []
    if record.get("pruning_mode") == "block-local" and record.get("pruning_mode_reason"):
        lines.append(f"pruned block by block: {record['pruning_mode_reason']}")
    lines += [f"left unpruned: {s['group']}: {s['reason']}" for s in record.get("skipped", [])]
    return lines


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

