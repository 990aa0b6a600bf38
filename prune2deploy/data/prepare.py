"""The pipeline's data and accuracy stages: load --data/--val-data/--calib-data before anything is written,
then measure the metric of the dense and pruned models on the same validation batches into report `accuracy`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.data.load import Batch, count_samples, load_data, train_val_batches
from prune2deploy.errors import user_error
from prune2deploy.data.metrics import Metric, resolve_metric

CALIB_BATCHES_FROM_DATA = 4  # Taylor/Hessian and the fidelity check use this many --data batches by default


@dataclass
class CompileData:
    train: list[Batch] = field(default_factory=list)
    val: list[Batch] = field(default_factory=list)
    calib: list[Batch] = field(default_factory=list)
    description: dict = field(default_factory=dict)
    metric: Metric | None = None

    def all_batches(self) -> list[Batch]:
        """Everything that changes the artifacts: the cache key hashes it."""
        return self.calib + self.train + self.val


def prepare_data(options, model: nn.Module, example: ExampleInputs, calib_batches: list | None = None) -> CompileData:
    """Read and check every data set and resolve the metric; UserError (exit 2) for anything wrong."""
    train, val, description = train_val_batches(options, model, example)
    if options.metric is not None and not val:
        raise user_error(f"--metric {options.metric} needs validation data", "give --data or --val-data")
    metric = resolve_metric(options.metric, model, val) if val else None
    if calib_batches:
        calib = list(calib_batches)
    elif options.calib_data:
        calib = load_data(options.calib_data, model, example, options, what="--calib-data")
    else:
        calib = train[:CALIB_BATCHES_FROM_DATA]
    return CompileData(train, val, calib, description, metric)


def measure_accuracy(report: dict, metric: Metric, models: dict, val: list[Batch], data: dict | None = None) -> dict:
    """report["accuracy"]: the metric of the dense model and of each pruned one on `val`.

    `pruned` is the model that gets exported; it equals `after_prune` until a recovery step replaces it.
    """
    dense = metric(models["dense"], val)
    after = metric(models["pruned"], val)
    accuracy = {"metric": metric.name, "unit": metric.unit, "dense": dense, "after_prune": after,
                "pruned": after, "drop": metric.drop(dense, after), "samples": count_samples(val),
                "data": data or {}}
    if "pruned_2to4" in models:
        accuracy["pruned_2to4"] = metric(models["pruned_2to4"], val)
        accuracy["drop_2to4"] = metric.drop(dense, accuracy["pruned_2to4"])
    report["accuracy"] = accuracy
    return accuracy
