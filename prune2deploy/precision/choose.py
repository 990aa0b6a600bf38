"""Resolve `--precision` for a target, and gather INT8's calibration samples: refused in one line when the target
cannot run the precision, or when INT8 has no real samples (random ones only with --calib-random)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prune2deploy.context import ExampleInputs
from prune2deploy.errors import user_error
from prune2deploy.precision.deployed import fit_tokens

CALIBRATION_SAMPLES = 300  # NNCF's default subset size


@dataclass
class Precision:
    requested: str
    deployed: str
    why: str
    calibration: dict | None = None  # {"source": ..., "samples": n}

    def record(self) -> dict:
        return {"requested": self.requested, "deployed": self.deployed, "why": self.why,
                "calibration": self.calibration}


def resolve(requested: str, target: str, supported: tuple[str, ...], auto: tuple[str, str]) -> Precision:
    """`auto` is (precision, why) of the target's driver; anything else must be one the target runs here."""
    if requested == "auto":
        return Precision("auto", auto[0], auto[1])
    if requested not in supported:
        raise user_error(f"target {target} cannot run --precision {requested} on this machine",
                         f"it runs {', '.join(supported)}; --precision auto picks the fastest")
    return Precision(requested, requested, "as requested")


def calibration_feeds(precision: Precision, calib_batches: list, example: ExampleInputs, calib_random: bool,
                      seed: int, data_label: str | None) -> list[dict]:
    """Feeds (name -> array) shaped like the example inputs for INT8 calibration; [] for other precisions."""
    if precision.deployed != "int8":
        return []
    tensors = example.tensors()
    batch = int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1
    feeds = [inputs.as_feed() for inputs in _chunks(calib_batches, example, CALIBRATION_SAMPLES)]
    if feeds:
        precision.calibration = {"source": data_label or "--calib-data", "samples": len(feeds) * batch}
        return feeds
    if not calib_random:
        raise user_error("--precision int8 calibrates on real samples and none were given",
                         "give --calib-data or --data (any data form p2d reads), or --calib-random to calibrate on "
                         "random inputs (labelled so in the report; accuracy is then unknown)")
    from prune2deploy.model.inputs import random_like

    generator = torch.Generator().manual_seed(seed)
    feeds = [random_like(example, seed=int(torch.randint(0, 2**31, (1,), generator=generator))).as_feed()
             for _ in range(32)]
    precision.calibration = {"source": "random inputs (--calib-random): NOT real data", "samples": 32 * batch}
    return feeds


def precision_check_sets(batches: list, example: ExampleInputs, limit: int = 32) -> list[ExampleInputs]:
    """Up to `limit` real input sets shaped like the example inputs (the exported graph's static batch)."""
    return _chunks(batches, example, limit)


def _chunks(batches: list, example: ExampleInputs, limit: int) -> list[ExampleInputs]:
    """The samples of `batches`, regrouped into sets of the example's batch size (at most `limit` sets); batches
    whose shapes differ (token sequences grouped by length) are regrouped one by one."""
    tensors = example.tensors()
    size = int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1
    groups, pending = [], None
    shapes = [tuple(t.shape) for t in tensors]
    for inputs, _ in batches:
        parts, _ = fit_tokens(inputs.tensors(), shapes)  # token batches of another length: the graph's length
        if pending is not None and all(a.shape[1:] == b.shape[1:] for a, b in zip(pending, parts)):
            pending = [torch.cat([a, b]) for a, b in zip(pending, parts)]
        else:
            if pending is not None:
                groups.append(pending)
            pending = list(parts)
    if pending is not None:
        groups.append(pending)
    sets = []
    for parts in groups:
        n = int(parts[0].shape[0]) if parts[0].dim() else 1
        for start in range(0, n - size + 1, size):
            sets.append(example.like([t[start:start + size] for t in parts]))
            if len(sets) >= limit:
                return sets
    return sets
