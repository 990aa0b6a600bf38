"""Re-estimate BatchNorm running statistics on training batches: cheap, and after pruning often recovers a lot.

Pruning removes channels the next layers' statistics were measured with; the stored running mean/var no longer
describe what the pruned layers see. Forward passes in train mode (BatchNorm only; dropout stays off), without
gradients, with a cumulative moving average, give the statistics of the pruned network on real data.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prune2deploy.errors import user_error

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]


def recalibrate_bn(model: nn.Module, batches: list, max_batches: int | None = 100) -> int:
    """Reset and re-estimate every BatchNorm's running stats on `batches` [(ExampleInputs, labels)].

    Returns the number of BatchNorm layers re-estimated (0: nothing to do, the model is unchanged).
    The model is left in eval mode. A running statistic that becomes NaN or Inf is a UserError naming the layer
    and the batch.
    """
    norms = batch_norms(model)
    if not norms or not batches:
        return 0
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an exponential one
        m.train()
    names = {id(m): name for name, m in model.named_modules()}
    used = batches[:max_batches]
    try:
        with torch.no_grad():
            for step, (inputs, _) in enumerate(used, 1):
                inputs.call(model)
                _check_finite(norms, names, step, len(used))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)


def _check_finite(norms: list, names: dict, step: int, steps: int) -> None:
    for m in norms:
        for stat in ("running_mean", "running_var"):
            value = getattr(m, stat)
            if value is not None and not bool(torch.isfinite(value).all()):
                kind = "NaN" if bool(torch.isnan(value).any()) else "Inf"
                raise user_error(f"BatchNorm re-estimation: {stat} of layer {names.get(id(m)) or '(the model)'} "
                                 f"({type(m).__name__}) became "
                                 f"{kind} at batch {step} of {steps}",
                                 "check --data for NaN or extreme values, or lower --lr when recovery trained "
                                 "the model before this re-estimation")
