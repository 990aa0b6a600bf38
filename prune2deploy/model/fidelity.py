"""Numerical checks: an ONNX file against its torch model, and the pruned model against the dense one."""
from __future__ import annotations

import time

import numpy as np
import torch

from prune2deploy.model.outputs import flatten_outputs


def _errors(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Max absolute error, and that error relative to the reference's largest magnitude."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    abs_err = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


def reference_outputs(torch_model, input_sets: list) -> list[list[tuple[str, torch.Tensor]]]:
    """The torch model's flattened outputs on each input set: what its ONNX file must reproduce."""
    with torch.no_grad():
        return [[(name, t.detach().clone()) for name, t in flatten_outputs(inputs.call(torch_model))]
                for inputs in input_sets]


def verify_onnx(reference, runner, input_sets: list, tolerance: float) -> dict:
    """Run each input set through onnxruntime and compare with torch; report the worst error per output.

    `reference` is the torch model, or its `reference_outputs` on `input_sets` (the model need not be in
    memory then). max_rel_err is max|onnx - torch| / max|torch| per output, so tiny reference values do not
    blow it up. An output that is all zeros, or moves less than the tolerance across the input sets, gets a
    `warning`: an error in what depends on the input could not show.
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
            if tuple(ref.shape) != tuple(value.shape):
                abs_err = rel_err = float("inf")
            else:
                abs_err, rel_err = _errors(ref.detach().float().numpy(), np.asarray(value))
            entry = per_output.setdefault(name, {"output": name, "max_abs_err": 0.0, "max_rel_err": 0.0})
            entry["max_abs_err"] = max(entry["max_abs_err"], abs_err)
            entry["max_rel_err"] = max(entry["max_rel_err"], rel_err)
    for name, ref in reference[0]:
        if ref.numel() and float(ref.float().abs().max()) == 0.0:
            per_output[name]["warning"] = "output is all zeros on the check inputs: verification cannot see errors in it"
        elif name in spread and spread[name] <= tolerance * float(ref.float().abs().max()):
            moved = spread[name] / float(ref.float().abs().max())
            per_output[name]["warning"] = (
                f"output changes with the input by at most {moved:.1e} of its magnitude, under the tolerance "
                "(e.g. random weights whose signal dies out): verification cannot see errors in it")
    worst = max(per_output.values(), key=lambda e: e["max_rel_err"])
    return {"outputs": list(per_output.values()), "worst_output": worst["output"],
            "max_abs_err": worst["max_abs_err"], "max_rel_err": max(e["max_rel_err"] for e in per_output.values()),
            "tolerance": tolerance, "input_sets": len(input_sets),
            "passed": all(e["max_rel_err"] <= tolerance for e in per_output.values())}


def fidelity(dense, pruned, input_sets: list, calibrated: bool = False, budget_s: float | None = None,
             min_sets: int = 2) -> dict:
    """How close the pruned model stays to the dense one: cosine similarity, and top-1 agreement for classifiers.

    With `budget_s`, sets after the first `min_sets` are left out once that much time has gone (large models
    on a slow CPU); the result says how many sets were used.
    """
    cosines, agree, total, classifier = [], 0, 0, True
    started, used = time.perf_counter(), 0
    for inputs in input_sets:
        if budget_s is not None and used >= min_sets and time.perf_counter() - started > budget_s:
            break
        used += 1
        with torch.no_grad():
            a = flatten_outputs(inputs.call(dense))[0][1].float()
            b = flatten_outputs(inputs.call(pruned))[0][1].float()
        rows_a, rows_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        cosines.extend(torch.nn.functional.cosine_similarity(rows_a, rows_b, dim=1).tolist())
        if a.dim() == 2 and a.shape[1] > 1:
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            total += a.shape[0]
        else:
            classifier = False
    result = {"cosine_mean": float(np.mean(cosines)), "cosine_min": float(np.min(cosines)),
              "samples": len(cosines), "input_sets": f"{used} of {len(input_sets)}", "output": "first output",
              "inputs": "example inputs and calibration data" if calibrated
                        else "example + random inputs; --calib-data gives real ones"}
    result["top1_agreement"] = agree / total if classifier and total else None
    return result
