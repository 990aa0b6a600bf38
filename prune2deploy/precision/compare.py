"""A lower-precision artifact against the torch FP32 model on the check sets: cosine similarity of every output,
top-1 agreement for class scores, and the largest relative error. Each precision has its own floor; a
non-finite output never passes."""
from __future__ import annotations

import numpy as np

COSINE_FLOOR = {"fp32": 0.9999, "bf16": 0.99, "fp16": 0.999, "int8": 0.9}


def compare(reference: list, runner, check_sets: list, precision: str) -> dict:
    """`reference`: per check set, [(output name, torch tensor)] (model.fidelity.reference_outputs)."""
    cosines, agree, total, worst, finite = [], 0, 0, 0.0, True
    for inputs, expected in zip(check_sets, reference):
        got = runner.run(inputs.as_feed())
        for (name, ref), value in zip(expected, got):
            ref = ref.detach().float().numpy().astype(np.float64).reshape(-1)
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if not (np.isfinite(ref).all() and np.isfinite(value).all()):
                finite = False
                continue
            denom = float(np.linalg.norm(ref) * np.linalg.norm(value))
            cosines.append(float(ref @ value / denom) if denom else float(np.array_equal(ref, value)))
            scale = float(np.max(np.abs(ref))) or 1.0
            worst = max(worst, float(np.max(np.abs(ref - value))) / scale)
        ref0, got0 = expected[0][1].detach().float().numpy(), np.asarray(got[0])
        if ref0.ndim == 2 and ref0.shape[1] > 1:  # class scores: does the arg-max survive?
            agree += int((ref0.argmax(1) == got0.argmax(1)).sum())
            total += ref0.shape[0]
    floor = COSINE_FLOOR[precision]
    cosine_min = min(cosines) if cosines else float("nan")
    return {"precision": precision, "cosine_min": cosine_min, "cosine_mean": float(np.mean(cosines)) if cosines else None,
            "top1_agreement": agree / total if total else None, "max_rel_err": worst, "finite": finite,
            "cosine_floor": floor, "input_sets": len(check_sets),
            "passed": finite and bool(cosines) and cosine_min >= floor}
