"""NetAdapt-style greedy allocation (Yang et al., 2018) over a cost table and a scorer.

Each step proposes, for every group, the largest narrower width whose table saving is at least one slice of cost
(the last step: exactly what is left to the target), scores every proposal (`score_many`, e.g. an executor), and
keeps the best; it stops when the table's estimate meets the target. Independent of models and timing, so it can
be tested on a synthetic table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .groups import Group
from .latency_table import CostTable

SLICE = 0.05  # cost removed per step, as a fraction of the dense cost


class Unreachable(Exception):
    """No group can be narrowed further and the target is not met; `widths` is the narrowest allocation reached."""

    def __init__(self, widths: dict[str, int], estimated_cost: float):
        super().__init__(f"estimated cost {estimated_cost:g} above the target")
        self.widths, self.estimated_cost = widths, estimated_cost


@dataclass
class Allocation:
    widths: dict[str, int]
    estimated_cost: float
    steps: list[dict] = field(default_factory=list)
    candidates_scored: int = 0


def propose(group: Group, current: int, table: CostTable, slice_cost: float) -> int | None:
    """The largest allowed width below `current` saving >= slice_cost more than `current` (else the narrowest
    that saves anything more); None when narrowing saves nothing."""
    base = table.saved_at(group.name, current)
    chosen = None
    for width in group.widths_below(current):
        gain = table.saved_at(group.name, width) - base
        if gain > 0:
            chosen = width
        if gain >= slice_cost:
            return width
    return chosen


def allocate(groups: list[Group], table: CostTable, score_many: Callable[[list], list], target_cost: float,
             slice_fraction: float = SLICE, start: dict[str, int] | None = None,
             on_step: Callable[[dict], None] | None = None) -> Allocation:
    """Greedy steps from `start` (default: every group dense) until table.estimate(widths) <= target_cost."""
    widths = dict(start or {g.name: g.width for g in groups})
    result = Allocation(widths, table.estimate(widths))
    while (cost := table.estimate(widths)) > target_cost:
        slice_cost = min(slice_fraction * table.dense, cost - target_cost)
        proposals = {g.name: w for g in groups if (w := propose(g, widths[g.name], table, slice_cost)) is not None}
        if not proposals:
            raise Unreachable(widths, cost)
        candidates = [{**widths, name: w} for name, w in proposals.items()]
        scores = score_many(candidates)
        result.candidates_scored += len(candidates)
        costs = [table.estimate(c) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: (scores[i], -costs[i]))
        name = list(proposals)[best]
        step = {"step": len(result.steps) + 1, "group": name, "from": widths[name], "to": proposals[name],
                "score": scores[best], "estimated_cost": costs[best], "proposals": len(candidates)}
        widths = candidates[best]
        result.steps.append(step)
        if on_step:
            on_step(step)
    result.widths, result.estimated_cost = widths, table.estimate(widths)
    return result
