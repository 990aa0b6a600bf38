"""An exported ONNX file against its torch model: run the same input sets in a runner and compare every output."""
from __future__ import annotations

import numpy as np
import torch

from prune2deploy.model.fidelity import reference_outputs


def _errors(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Max absolute error, and that error relative to the reference's largest magnitude."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    abs_err = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


def _nonfinite(ref: np.ndarray, got: np.ndarray) -> str | None:
    """Which side holds a value that is not finite: an error against NaN or Inf means nothing, so it fails."""
    def kind(a: np.ndarray) -> str | None:
        if not np.issubdtype(a.dtype, np.inexact) or bool(np.isfinite(a).all()):
            return None
        return "NaN" if bool(np.isnan(a).any()) else "Inf"
    sides = [f"{k} in the {side}" for side, k in (("torch reference", kind(ref)), ("ONNX output", kind(got))) if k]
    return " and ".join(sides) or None


def verify_onnx(reference, runner, input_sets: list, tolerance: float) -> dict:
    """Run each input set through onnxruntime and compare with torch; report the worst error per output.

    `reference` is the torch model, or its `reference_outputs` on `input_sets` (the model need not be in
    memory then). max_rel_err is max|onnx - torch| / max|torch| per output, so tiny reference values do not
    blow it up. An output that is all zeros, or moves less than the tolerance across the input sets, gets a
    `warning`: an error in what depends on the input could not show. A value that is not finite on either side
    makes that output's error inf (failed), with a `nonfinite` note saying which side.
    """
    if isinstance(reference, torch.nn.Module):
        reference = reference_outputs(reference, input_sets)
    per_output: dict[str, dict] = {}
    first: dict[str, torch.Tensor] = {}
    spread: dict[str, float] = {}  # how far each output moves from the first input set's, over the others
    for inputs, expected in zip(input_sets, reference):
        for name, ref in expected:
            if name not in first:
                first[name] = ref.detach().float()
            elif ref.shape == first[name].shape and ref.numel():
                spread[name] = max(spread.get(name, 0.0), float((ref.detach().float() - first[name]).abs().max()))
        got = runner.run(inputs.as_feed())
        if len(got) != len(expected):
            raise AssertionError(f"ONNX model has {len(got)} outputs, torch model {len(expected)}")
        for (name, ref), value in zip(expected, got):
            entry = per_output.setdefault(name, {"output": name, "max_abs_err": 0.0, "max_rel_err": 0.0})
            ref_np, value = ref.detach().float().numpy(), np.asarray(value)
            bad = _nonfinite(ref_np, value)
            if bad:
                entry.setdefault("nonfinite", bad)
                abs_err = rel_err = float("inf")
            elif tuple(ref.shape) != tuple(value.shape):
                abs_err = rel_err = float("inf")
            else:
                abs_err, rel_err = _errors(ref_np, value)
            entry["max_abs_err"] = max(entry["max_abs_err"], abs_err)
            entry["max_rel_err"] = max(entry["max_rel_err"], rel_err)
    for name, ref in reference[0]:
        if "nonfinite" in per_output[name]:
            continue
        if ref.numel() and float(ref.float().abs().max()) == 0.0:
            per_output[name]["warning"] = "output is all zeros on the check inputs: verification cannot see errors in it"
        elif name in spread and spread[name] <= tolerance * float(ref.float().abs().max()):
            moved = spread[name] / float(ref.float().abs().max())
            per_output[name]["warning"] = (
                f"output changes with the input by at most {moved:.1e} of its magnitude, under the tolerance "
                "(e.g. random weights whose signal dies out): verification cannot see errors in it")
    worst = max(per_output.values(), key=lambda e: e["max_rel_err"])
    result = {"outputs": list(per_output.values()), "worst_output": worst["output"],
              "max_abs_err": worst["max_abs_err"], "max_rel_err": max(e["max_rel_err"] for e in per_output.values()),
              "tolerance": tolerance, "input_sets": len(input_sets),
              "passed": all(e["max_rel_err"] <= tolerance for e in per_output.values())}
    if "nonfinite" in worst:  # the worst output's error is inf because a value is NaN/Inf: say which side
        result["nonfinite"] = worst["nonfinite"]
    return result
