"""Distillation-input augmentation (TinyBERT-style): the teacher labels any input, so training batches can be
real sentences with some tokens replaced. --kd-augment F replaces a fraction F of each sentence's inner tokens
(not the first or last real token: [CLS]/[SEP]) with tokens drawn from the batch's own real inner tokens, fresh
every step and seeded. Validation and test data stay clean.
"""
from __future__ import annotations

import torch

from prune2deploy.context import ExampleInputs
from prune2deploy.errors import user_error


def check_augmentable(inputs: ExampleInputs) -> None:
    ids, mask = inputs.kwargs.get("input_ids"), inputs.kwargs.get("attention_mask")
    if ids is None or mask is None or ids.dtype.is_floating_point:
        raise user_error("--kd-augment needs token inputs (input_ids and attention_mask, e.g. text: data)",
                         "leave --kd-augment at 0 for this model")


def replace_tokens(inputs: ExampleInputs, fraction: float, generator: torch.Generator) -> ExampleInputs:
    """A copy of `inputs` whose input_ids have about `fraction` of the inner real tokens replaced."""
    ids, mask = inputs.kwargs["input_ids"], inputs.kwargs["attention_mask"].bool()
    lengths = mask.sum(1, keepdim=True)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    inner = mask & (positions > 0) & (positions < lengths - 1)
    if not inner.any():
        return inputs
    pool = ids[inner]
    chosen = inner & (torch.rand(ids.shape, generator=generator) < fraction)
    replaced = ids.clone()
    replaced[chosen] = pool[torch.randint(len(pool), (int(chosen.sum()),), generator=generator)]
    return ExampleInputs(inputs.args, {**inputs.kwargs, "input_ids": replaced})
