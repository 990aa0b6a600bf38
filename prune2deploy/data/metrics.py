"""--metric: how well a model does on the validation batches. `top1` (percent of labels predicted by the
first output's argmax), `cosine` (mean cosine similarity of each sample's first output to the dense
model's on the same batches), or `module:callable(model, batches) -> float` (higher is better).

With --metric unset: top1 when every validation batch has labels and the first output is class scores
[batch, classes], else cosine. For a [batch, tokens, hidden] output with an `attention_mask` input, the
compared vector is the mask-weighted mean over tokens (a sentence embedding, as sentence-transformers pools).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from prune2deploy.data.load import Batch, count_samples
from prune2deploy.errors import UserError, user_error
from prune2deploy.model.outputs import flatten_outputs

NAMED = ("top1", "cosine")


@dataclass
class Metric:
    name: str
    unit: str  # "%" for top1, "" otherwise
    fn: Callable[[nn.Module, list], float] = field(repr=False)
    higher_is_better: bool = True

    def __call__(self, model: nn.Module, batches: list[Batch]) -> float:
        """The metric of `model` on `batches`, in eval mode and without gradients; the mode is restored."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = self.fn(model, batches)
        except UserError:
            raise
        except Exception as exc:
            if self.name in NAMED:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise user_error(f"--metric {self.name} raised {type(exc).__name__}: {first}",
                             "call it in Python on (model, batches) to see the traceback") from exc
        finally:
            model.train(was_training)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise user_error(f"--metric {self.name} returned {value!r}, not a number")
        return float(value)

    def drop(self, dense_value: float, pruned_value: float) -> float:
        return drop(dense_value, pruned_value)


def drop(dense_value: float, pruned_value: float) -> float:
    """How much worse the pruned model is, in the metric's units (percentage points for top1)."""
    return dense_value - pruned_value


def resolve_metric(spec: str | None, dense: nn.Module, val: list[Batch]) -> Metric:
    """The Metric for --metric `spec` (None: automatic) on validation batches `val` of `dense`."""
    from prune2deploy.model.loading import import_callable, looks_like_callable

    if not val:
        raise user_error("--metric needs validation data", "give --data (a --val-split is held out) or --val-data")
    if spec is None:
        spec = "top1" if _classifier_with_labels(dense, val) else "cosine"
    if spec == "top1":
        if not _classifier_with_labels(dense, val):
            raise user_error("--metric top1 needs labels in the validation data and class scores as the "
                             "model's first output", "use --metric cosine, or give (inputs, labels) data")
        return Metric("top1", "%", top1)
    if spec == "cosine":
        return Metric("cosine", "", CosineToDense(dense))
    if looks_like_callable(spec):
        fn = import_callable(spec)
        if not callable(fn):
            raise user_error(f"--metric {spec} is a {type(fn).__name__}, not a callable")
        return Metric(getattr(fn, "__name__", spec.rpartition(":")[2]), "", fn)
    raise user_error(f"unknown metric {spec!r}", "use top1, cosine or module:callable(model, batches) -> float")


def top1(model: nn.Module, batches: list[Batch]) -> float:
    correct = sum(int((_first(inputs.call(model)).argmax(1) == labels).sum()) for inputs, labels in batches)
    return 100.0 * correct / count_samples(batches)


class CosineToDense:
    """Mean cosine of each sample's vector to the dense model's; the dense vectors are computed once per batch list."""

    def __init__(self, dense: nn.Module):
        self.dense = dense
        self._cache: dict[int, tuple[list, list[torch.Tensor]]] = {}

    def __call__(self, model: nn.Module, batches: list[Batch]) -> float:
        reference = self._reference(batches)
        total, count = 0.0, 0
        for (inputs, _), ref in zip(batches, reference):
            vec = ref if model is self.dense else sample_vectors(inputs.call(model), inputs)  # dense: same outputs
            total += float(F.cosine_similarity(vec, ref, dim=1).sum())
            count += vec.shape[0]
        return total / count

    def _reference(self, batches: list[Batch]) -> list[torch.Tensor]:
        cached = self._cache.get(id(batches))
        if cached is None or cached[0] is not batches:
            was_training = self.dense.training
            self.dense.eval()
            with torch.no_grad():
                vectors = [sample_vectors(inputs.call(self.dense), inputs) for inputs, _ in batches]
            self.dense.train(was_training)
            cached = self._cache[id(batches)] = (batches, vectors)
        return cached[1]


def sample_vectors(output, inputs) -> torch.Tensor:
    """[batch, features] from the first output: token outputs are mean-pooled over the attention mask."""
    out = _first(output).float()
    mask = inputs.kwargs.get("attention_mask")
    if out.dim() == 3 and mask is not None and tuple(mask.shape) == tuple(out.shape[:2]):
        weights = mask.to(out.dtype).unsqueeze(-1)
        return (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return out.reshape(out.shape[0], -1)


def _first(output) -> torch.Tensor:
    return flatten_outputs(output)[0][1]


def _classifier_with_labels(dense: nn.Module, val: list[Batch]) -> bool:
    if any(labels is None for _, labels in val):
        return False
    inputs, was_training = val[0][0], dense.training
    dense.eval()
    with torch.no_grad():
        out = _first(inputs.call(dense))
    dense.train(was_training)
    return out.dim() == 2 and out.shape[1] > 1 and out.dtype.is_floating_point
