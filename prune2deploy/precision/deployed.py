"""A deployed artifact (INT8 ONNX, OpenVINO IR) as a module the accuracy metrics can call, so the metric is
measured on what ships, not on the torch model it came from."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs


class RunnerModule(nn.Module):
    """Calls `runner.run(feed)` in chunks of the exported graph's static batch size and returns torch tensors."""

    def __init__(self, runner, batch: int):
        super().__init__()
        self.runner, self.batch = runner, batch

    def forward(self, *args, **kwargs):
        inputs = ExampleInputs(args, kwargs)
        tensors = inputs.tensors()
        n = int(tensors[0].shape[0])
        chunks = []
        for start in range(0, n, self.batch):
            part = [t[start:start + self.batch] for t in tensors]
            short = self.batch - int(part[0].shape[0])
            if short:  # the graph's batch is static: pad with the last sample, drop its outputs after
                part = [torch.cat([t, t[-1:].expand(short, *t.shape[1:])]) for t in part]
            outs = self.runner.run(inputs.like(part).as_feed())
            chunks.append([np.asarray(o)[: self.batch - short] for o in outs])
        outs = [torch.from_numpy(np.concatenate([c[i] for c in chunks])).float() for i in range(len(chunks[0]))]
        return outs[0] if len(outs) == 1 else tuple(outs)
