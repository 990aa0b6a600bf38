"""How the pruned model compares with the dense one (cosine, top-1 agreement), and the torch reference outputs
that every exported artifact is checked against."""
from __future__ import annotations

import time

import numpy as np
import torch

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
