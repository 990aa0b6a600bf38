"""Re-estimate BatchNorm running statistics on training batches: cheap, and after pruning often recovers a lot.

Pruning removes channels the next layers' statistics were measured with; the stored running mean/var no longer
describe what the pruned layers see. Forward passes in train mode (BatchNorm only; dropout stays off), without
gradients, with a cumulative moving average, give the statistics of the pruned network on real data.
"""
from __future__ import annotations

import torch
import torch.nn as nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]


def recalibrate_bn(model: nn.Module, batches: list, max_batches: int | None = 100) -> int:
    """Reset and re-estimate every BatchNorm's running stats on `batches` [(ExampleInputs, labels)].

    Returns the number of BatchNorm layers re-estimated (0: nothing to do, the model is unchanged).
    The model is left in eval mode.
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
    try:
        with torch.no_grad():
            for inputs, _ in batches[:max_batches]:
                inputs.call(model)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)
