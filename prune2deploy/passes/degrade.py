"""Graceful degradation: prune group by group, and leave a group unpruned when pruning it breaks the model.

torch-pruning removes a group by replacing Parameters and setting width attributes; it never writes into
a tensor it keeps. So a `Snapshot` of every module's own state (shallow: the same tensor objects) restores
the model exactly, at no copying cost. Hook tables are copied too: a trace interrupted by the graph budget
leaves torch-pruning's forward hooks (local functions) behind, which would break torch.save of the model. `prune_group_by_group` tries each group torch-pruning proposes,
checks the model still runs with unchanged output shapes, and rolls the group back when it does not.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch.nn as nn


class Snapshot:
    """Every module's attributes, parameters, buffers and children as they are now; `restore()` puts them back."""

    def __init__(self, model: nn.Module):
        self._states = [(m, _state(m)) for m in model.modules()]

    def restore(self) -> None:
        for m, state in self._states:
            m.__dict__.clear()
            m.__dict__.update({k: _copied(k, v) for k, v in state.items()})


_DICTS = ("_parameters", "_buffers", "_modules")


def _copied(key: str, value):
    """Own copies of the tables a prune or a trace changes in place (hook tables keep their OrderedDict type:
    hook handles hold weak references to them)."""
    if key in _DICTS:
        return dict(value)
    if isinstance(value, list):  # e.g. nn.LSTM's _flat_weights: torch-pruning edits it in place
        return list(value)
    return copy.copy(value) if "hook" in key and isinstance(value, dict) else value


def _state(m: nn.Module) -> dict:
    return {k: _copied(k, v) for k, v in m.__dict__.items()}


def group_name(group, model: nn.Module) -> str:
    """A group's root layer by qualified name (what --ignore takes)."""
    names = {id(m): n for n, m in model.named_modules()}
    root = group[0][0].target.module
    return names.get(id(root), type(root).__name__)


def prune_group_by_group(groups, model: nn.Module, check: Callable[[], str | None]) -> tuple[int, list[dict]]:
    """Prune each group of `groups` (torch-pruning's interactive step); keep it only if `check()` is None.

    `check` returns why the model is broken (or None). Returns (groups pruned, skipped [{group, reason}]).
    """
    pruned, skipped = 0, []
    groups = iter(groups)
    while True:
        snapshot = Snapshot(model)
        try:
            group = next(groups)
        except StopIteration:
            break
        except Exception as exc:  # torch-pruning failed while proposing the next group: nothing more to try
            skipped.append({"group": "(remaining groups)", "reason": f"torch-pruning: {first_line(exc)}"})
            break
        name = group_name(group, model)
        try:
            group.prune()
            reason = check()
        except Exception as exc:
            reason = f"torch-pruning: {first_line(exc)}"
        if reason is None:
            pruned += 1
        else:
            snapshot.restore()
            skipped.append({"group": name, "reason": reason})
    return pruned, skipped


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
