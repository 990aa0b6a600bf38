"""How the pruned model compares with the dense one (cosine, top-1 agreement), and the torch reference outputs
that every exported artifact is checked against."""
from __future__ import annotations

import time

import numpy as np
import torch

from prune2deploy.errors import VerificationError, user_error
from prune2deploy.model.inputs import nonfinite
from prune2deploy.model.outputs import flatten_outputs


def reference_outputs(torch_model, input_sets: list) -> list[list[tuple[str, torch.Tensor]]]:
    """The torch model's flattened outputs on each input set: what its ONNX file must reproduce."""
    with torch.no_grad():
        return [[(name, t.detach().clone()) for name, t in flatten_outputs(inputs.call(torch_model))]
                for inputs in input_sets]


def fidelity(dense, pruned, input_sets: list, calibrated: bool = False, budget_s: float | None = None,
             min_sets: int = 2) -> dict:
    """How close the pruned model stays to the dense one: cosine similarity, and top-1 agreement for classifiers.

    With `budget_s`, sets after the first `min_sets` are left out once that much time has gone (large models
    on a slow CPU); the result says how many sets were used. An output of either model that is not finite (NaN,
    Inf) on any set is an error: the dense model's a UserError, the pruned model's a VerificationError.
    """
    cosines, agree, total, classifier = [], 0, 0, True
    started, used = time.perf_counter(), 0
    bad = {"dense": [], "pruned": []}  # (set number from 1, "NaN in output") per model
    for inputs in input_sets:
        if budget_s is not None and used >= min_sets and time.perf_counter() - started > budget_s:
            break
        used += 1
        with torch.no_grad():
            out_a, out_b = inputs.call(dense), inputs.call(pruned)
        for side, out in (("dense", out_a), ("pruned", out_b)):
            what = nonfinite(out)
            if what:
                bad[side].append((used, what))
        if bad["dense"] or bad["pruned"]:
            continue
        a = flatten_outputs(out_a)[0][1].float()
        b = flatten_outputs(out_b)[0][1].float()
        rows_a, rows_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        cosines.extend(torch.nn.functional.cosine_similarity(rows_a, rows_b, dim=1).tolist())
        if a.dim() == 2 and a.shape[1] > 1:
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            total += a.shape[0]
        else:
            classifier = False
    _refuse_nonfinite(bad, used, calibrated)
    result = {"cosine_mean": float(np.mean(cosines)), "cosine_min": float(np.min(cosines)),
              "samples": len(cosines), "input_sets": f"{used} of {len(input_sets)}", "output": "first output",
              "inputs": "example inputs and calibration data" if calibrated
                        else "example + random inputs; --calib-data gives real ones"}
    result["top1_agreement"] = agree / total if classifier and total else None
    return result


def _refuse_nonfinite(bad: dict, used: int, calibrated: bool) -> None:
    """The check sets are the example inputs (set 1), then calibration batches or random inputs."""
    others = "--calib-data (or --data) batches" if calibrated else "random inputs"
    if bad["dense"]:
        first, what = bad["dense"][0]
        raise user_error(f"the dense model's output is not finite on {len(bad['dense'])} of {used} check sets "
                         f"({what}; first on set {first}: set 1 is the example inputs, the others {others}): the "
                         f"model itself gives NaN/Inf",
                         "check the model's weights and what it computes, and --data/--calib-data for NaN or "
                         "extreme values")
    if bad["pruned"]:
        first, what = bad["pruned"][0]
        raise VerificationError(f"the pruned model's output is not finite on {len(bad['pruned'])} of {used} check "
                                f"sets ({what}; first on set {first}: set 1 is the example inputs, the others "
                                f"{others}) while the dense model's is finite",
                                "check --data for NaN or extreme values, or the model itself; a lower --ratio "
                                "or --lr may avoid it")
