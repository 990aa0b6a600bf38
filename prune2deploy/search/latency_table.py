"""Cost tables: what each group saves at each kept width, measured (never inferred from MACs), cached.

A latency table times, for every group, the dense model and the model with only that group narrowed to each
grid width, interleaved in one loop on the target (ort-cpu: the exported ONNX in onnxruntime, as the benchmark
does). A group's saving is dense p50 x (1 - variant p50 / dense p50), so drift between groups cancels. Between
grid widths the saving is interpolated linearly; noise that makes a narrower width look slower is evened out by
a running maximum (a narrower width never saves less). A MACs table counts MACs of the same variants instead.
The model's estimated cost is dense minus the sum of the groups' savings (NetAdapt's look-up table); the budget
pass ranks with it and lands by measuring the real model (landing.py), since the sum mispredicts it. Like groups
(the same layer configuration in the same block structure at the same input shapes, see like_groups.py) share
one measured row, so a stack of identical blocks costs one measurement; the dense model is exported once per timer, not once per group.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from prune2deploy.model.facts import count_macs_params
from prune2deploy.artifacts.cache import cached_json
from prune2deploy.search.groups import Group
from prune2deploy.search.like_groups import representatives
from prune2deploy.search.prune_to import pruned_copy

GRID = (0.75, 0.5, 0.25, 0.0)  # kept fractions measured per group (0.0: the group's smallest allowed width)
TIMING_SECONDS = 2.0  # per group: dense and its grid variants interleaved
Timer = Callable[[dict], dict]  # {name: nn.Module} -> {name: p50 ms}, timed together


@dataclass
class CostTable:
    kind: str  # "latency" | "macs"
    unit: str  # "ms" | "MACs"
    dense: float
    saved: dict[str, dict[int, float]] = field(default_factory=dict)  # group -> {kept width: cost saved}
    widths: dict[str, int] = field(default_factory=dict)  # group -> dense width
    measured_by: str = ""
    candidates_timed: int = 0
    shared: dict[str, str] = field(default_factory=dict)  # group -> the like group whose measured row it uses

    def saved_at(self, group: str, width: int) -> float:
        """Cost saved by narrowing `group` to `width`: measured, or interpolated between measured widths."""
        points = sorted({self.widths[group]: 0.0, **self.saved[group]}.items())
        if width >= points[-1][0]:
            return 0.0
        if width <= points[0][0]:
            return points[0][1]
        for (w0, s0), (w1, s1) in zip(points, points[1:]):
            if w0 <= width <= w1:
                return s0 + (s1 - s0) * (width - w0) / (w1 - w0)
        raise AssertionError("unreachable")

    def estimate(self, widths: dict[str, int]) -> float:
        return self.dense - sum(self.saved_at(g, w) for g, w in widths.items() if g in self.saved)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "unit": self.unit, "dense": self.dense, "measured_by": self.measured_by,
                "candidates_timed": self.candidates_timed, "widths": self.widths, "shared": self.shared,
                "saved": {g: {str(w): s for w, s in row.items()} for g, row in self.saved.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "CostTable":
        return cls(d["kind"], d["unit"], d["dense"], {g: {int(w): s for w, s in row.items()}
                                                     for g, row in d["saved"].items()},
                   d["widths"], d["measured_by"], d.get("candidates_timed", 0), d.get("shared", {}))


def _monotone(row: dict[int, float]) -> dict[int, float]:
    """Running maximum from wide to narrow: a narrower width never saves less than a wider one."""
    out, best = {}, 0.0
    for w in sorted(row, reverse=True):
        best = max(best, row[w])
        out[w] = best
    return out


def default_grid(groups: list[Group]) -> dict[str, list[int]]:
    return {g.name: g.grid(GRID) for g in groups}


def measure_table(model: nn.Module, inputs, groups: list[Group], options, timer: Timer | None,
                  grid_widths: dict[str, list[int]] | None = None, progress=None) -> CostTable:
    """A latency table (timer given) or a MACs table (timer None) over each group's grid widths."""
    grid_widths = grid_widths or default_grid(groups)
    table = CostTable("latency" if timer else "macs", "ms" if timer else "MACs", 0.0,
                      widths={g.name: g.width for g in groups},
                      measured_by=getattr(timer, "description", "count_ops_and_params") if timer else
                      "torch-pruning count_ops_and_params")
    dense_refs = []
    same_as = representatives(model, inputs, groups)
    measured = [g for g in groups if same_as[g.name] == g.name]
    for i, group in enumerate(measured):
        if progress:
            progress(i, len(measured), group.name)
        variants = {str(w): pruned_copy(model, inputs, groups, {group.name: w}, options)
                    for w in grid_widths[group.name]}
        if timer:
            p50 = timer({"dense": model, **variants})
            dense_refs.append(p50["dense"])
            row = {int(w): p50["dense"] * (1 - p50[w] / p50["dense"]) for w in variants}
            table.candidates_timed += len(variants)
        else:
            dense = count_macs_params(model, inputs)[0]
            dense_refs.append(dense)
            row = {int(w): dense - count_macs_params(m, inputs)[0] for w, m in variants.items()}
        table.saved[group.name] = _monotone(row)
    table.dense = sorted(dense_refs)[len(dense_refs) // 2] if dense_refs else 0.0
    if timer:  # rows were measured against their own dense timing: express them against the median
        for g, d in zip(measured, dense_refs):
            table.saved[g.name] = {w: s * table.dense / d for w, s in table.saved[g.name].items()}
    for g in groups:  # like groups: the row measured on the first of their configuration
        if same_as[g.name] != g.name:
            table.saved[g.name] = dict(table.saved[same_as[g.name]])
            table.shared[g.name] = same_as[g.name]
    return table


class OrtTimer:
    """Time models on ort-cpu: export each to ONNX (a private temporary folder), run them interleaved.

    The reference model (name `dense`) is exported once per timer and reused while it is the same object."""

    description = "onnxruntime (ort-cpu), interleaved p50"

    def __init__(self, inputs, options, seconds: float = TIMING_SECONDS):
        self.inputs, self.options, self.seconds = inputs, options, seconds
        self._reference = None  # (model, TemporaryDirectory holding its export)

    def _export(self, model, path: Path) -> Path:
        from prune2deploy.backends.onnx.export import export_onnx

        export_onnx(model, self.inputs, path, opset=self.options.opset, exporter=self.options.exporter,
                    slim=self.options.slim)
        return path

    def _reference_path(self, model) -> Path:
        if self._reference is None or self._reference[0] is not model:
            folder = tempfile.TemporaryDirectory(prefix="p2d-latency-ref-")
            self._reference = (model, folder, self._export(model, Path(folder.name) / "dense.onnx"))
        return self._reference[2]

    def __call__(self, models: dict) -> dict:
        from prune2deploy.backends.ort_cpu.runner import OrtRunner, default_threads

        from prune2deploy.runtime.timing import preemption_counter, time_interleaved

        feed = self.inputs.as_feed()
        with tempfile.TemporaryDirectory(prefix="p2d-latency-") as tmp:
            calls, threads = {}, self.options.threads or default_threads()
            for name, model in models.items():
                path = self._reference_path(model) if name == "dense" else \
                    self._export(model, Path(tmp) / f"m{len(calls)}.onnx")
                calls[name] = OrtRunner(path, threads).timed_call(feed)
            samples = time_interleaved(calls, warmup=3, min_iters=10, budget_s=self.seconds,
                                       switches=preemption_counter(threads))
        return paired_p50(samples)


def paired_p50(samples: dict[str, list[float]], reference: str = "dense") -> dict[str, float]:
    """p50 of the reference; every other variant as that times the median of its per-round ratio to the reference.

    Rounds of time_interleaved run every variant back to back, so a round's ratio cancels what slows the machine
    for longer than a round (other processes on shared cores); the ratio's median is far steadier than p50 / p50.
    """
    ref = samples[reference]
    ref_p50 = float(np.median(ref))
    return {name: ref_p50 if name == reference else ref_p50 * float(np.median(np.asarray(s) / np.asarray(ref)))
            for name, s in samples.items()}


def device_name() -> str:
    from prune2deploy.backends.ort_cpu.runner import device_description

    return device_description()


def table_key(model: nn.Module, inputs, groups: list[Group], grid_widths: dict, options, device: str) -> str:
    """Latency depends on the architecture, the input shapes, the widths and the machine, not on weights."""
    from prune2deploy.artifacts.manifest import tool_versions

    h = hashlib.sha256()
    for part in (repr(model), [(n, str(t.dtype), tuple(t.shape)) for n, t in zip(inputs.names, inputs.tensors())],
                 [g.to_dict() for g in groups], grid_widths, options.target, options.threads, options.opset,
                 options.exporter, options.slim, options.criterion, device, tool_versions()):
        h.update(repr(part).encode())
    return h.hexdigest()[:32]


def cached_table(cache_dir: Path | None, key: str, measure: Callable[[], CostTable]) -> tuple[CostTable, bool]:
    """The table stored under `key` in `cache_dir/latency-tables/`, else measured now and stored; (table, hit)."""
    return cached_json(Path(cache_dir) / "latency-tables" if cache_dir else None, key, measure,
                       CostTable.to_dict, CostTable.from_dict)
