"""NetAdapt-style greedy allocation (Yang et al., 2018) over a cost table and a scorer.

Each step proposes, for every group, the largest narrower width whose table saving is at least one slice of cost
(the last step: exactly what is left to the target), scores every proposal (`score_many`, e.g. an executor), and
keeps the one that loses the least score per unit of cost saved (NetAdapt compares proposals that save the same
latency; with coarse widths (round_to) proposals save different amounts, so the loss is divided by the saving);
on the last step, the highest score among the proposals that meet the target and land within LANDING_BAND of it
(else among all that meet it): a coarse group that would overshoot the budget (2.9x asked 2x) does not win.
It stops when the table's estimate meets the target. `uniform_widths` is the uniform allocation (every group at
one kept fraction, the widest that meets the same target), which the budget pass scores against the greedy one.
How far to go is decided by measuring the model (landing.py), since the table's sum mispredicts it.
Independent of models and timing, so it can be tested on a synthetic table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from prune2deploy.search.groups import Group
from prune2deploy.search.latency_table import CostTable

SLICE = 0.05  # cost removed per step, as a fraction of the dense cost
LANDING_BAND = 0.10  # last step: proposals landing at most this far below the target are preferred
UNIFORM_BISECTIONS = 20


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
    score: float | None = None


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


def uniform_widths(groups: list[Group], table: CostTable, target_cost: float,
                   start: dict[str, int] | None = None) -> tuple[float, dict[str, int]] | None:
    """The widest single kept fraction (every group at allowed(fraction x dense), at most its `start` width) whose
    table estimate meets target_cost, by bisection; None when even the narrowest does not."""
    start = start or {g.name: g.width for g in groups}

    def at(fraction: float) -> dict[str, int]:
        return {g.name: min(start[g.name], g.allowed(max(1, round(fraction * g.width)))) for g in groups}

    if table.estimate(at(0.0)) > target_cost:
        return None
    low, high = 0.0, 1.0  # estimate(at(low)) meets the target; at(high) does not (or is dense)
    for _ in range(UNIFORM_BISECTIONS):
        mid = (low + high) / 2
        low, high = (mid, high) if table.estimate(at(mid)) <= target_cost else (low, mid)
    return low, at(low)


def allocate(groups: list[Group], table: CostTable, score_many: Callable[[list], list], target_cost: float,
             slice_fraction: float = SLICE, start: dict[str, int] | None = None,
             on_step: Callable[[dict], None] | None = None) -> Allocation:
    """Greedy steps from `start` (default: every group dense) until table.estimate(widths) <= target_cost."""
    widths = dict(start or {g.name: g.width for g in groups})
    result = Allocation(widths, table.estimate(widths))
    current_score = None
    while (cost := table.estimate(widths)) > target_cost:
        slice_cost = min(slice_fraction * table.dense, cost - target_cost)
        proposals = {g.name: w for g in groups if (w := propose(g, widths[g.name], table, slice_cost)) is not None}
        if not proposals:
            raise Unreachable(widths, cost)
        candidates = [{**widths, name: w} for name, w in proposals.items()]
        if current_score is None:  # the allocation the steps start from, scored once
            current_score = score_many([widths])[0]
            result.candidates_scored += 1
        scores = score_many(candidates)
        result.candidates_scored += len(candidates)
        costs = [table.estimate(c) for c in candidates]
        landing = [i for i in range(len(candidates)) if costs[i] <= target_cost]
        close = [i for i in landing if costs[i] * (1 + LANDING_BAND) >= target_cost]
        if landing:  # the last step: the most accurate of those that meet the target without overshooting it
            best = max(close or landing, key=lambda i: (scores[i], -costs[i]))
        else:
            best = max(range(len(candidates)), key=lambda i: ((scores[i] - current_score) / (cost - costs[i]),
                                                              scores[i]))
        name = list(proposals)[best]
        step = {"step": len(result.steps) + 1, "group": name, "from": widths[name], "to": proposals[name],
                "score": scores[best], "estimated_cost": costs[best], "proposals": len(candidates)}
        widths, current_score = candidates[best], scores[best]
        result.steps.append(step)
        if on_step:
            on_step(step)
    result.widths, result.estimated_cost, result.score = widths, table.estimate(widths), current_score
    return result
