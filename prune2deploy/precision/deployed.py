"""A deployed artifact (INT8 ONNX, OpenVINO IR) as a module the accuracy metrics can call, so the metric is
measured on what ships, not on the torch model it came from."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs


def fit_tokens(tensors: list, shapes: list | None) -> tuple[list, int | None]:
    """Integer inputs (token ids, masks) padded with zeros or cut to the exported graph's static sequence length
    (`shapes`: the example's shapes); (tensors, the original length when it changed, else None). Padding with
    mask 0 leaves the real tokens' outputs as they were."""
    if not shapes:
        return tensors, None
    out, original = [], None
    for t, shape in zip(tensors, shapes):
        if t.dtype.is_floating_point or t.dim() != len(shape) or t.dim() < 2 or tuple(t.shape[2:]) != tuple(shape[2:]) \
                or t.shape[1] == shape[1]:
            out.append(t)
            continue
        original = int(t.shape[1])
        if t.shape[1] > shape[1]:
            out.append(t[:, :shape[1]])
        else:
            out.append(torch.cat([t, t.new_zeros(t.shape[0], shape[1] - t.shape[1], *t.shape[2:])], 1))
    return out, original


class RunnerModule(nn.Module):
    """Calls `runner.run(feed)` in chunks of the exported graph's static batch size and returns torch tensors.
    Token inputs of another length are fitted to the graph's (`shapes`) and token outputs cut back."""

    def __init__(self, runner, batch: int, shapes: list | None = None):
        super().__init__()
        self.runner, self.batch, self.shapes = runner, batch, shapes

    def forward(self, *args, **kwargs):
        inputs = ExampleInputs(args, kwargs)
        tensors, original = fit_tokens(inputs.tensors(), self.shapes)
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
        if original is not None and self.shapes:  # [batch, tokens, ...] outputs back to the real tokens
            length = self.shapes[0][1]
            outs = [o[:, :original] if o.dim() >= 2 and o.shape[1] == length and original < length else o for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)
