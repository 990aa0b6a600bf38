"""`p2d verify OUT_DIR`: every artifact against manifest.json's sha256, then every recorded model's ONNX file(s)
in onnxruntime against the torch outputs saved at compile time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prune2deploy.artifacts.manifest import MANIFEST, REFERENCE, sha256_file
from prune2deploy.errors import VerificationError, user_error


def verify_out_dir(out: Path) -> dict:
    """Hashes first, then every recorded model's ONNX file(s) in onnxruntime against the torch outputs."""
    if not (out / MANIFEST).exists():
        raise user_error(f"{out} has no {MANIFEST}", "pass a directory written by p2d compile")
    manifest = json.loads((out / MANIFEST).read_text())
    lines = []
    for rel, entry in manifest["artifacts"].items():
        path = out / rel
        if not path.exists():
            raise VerificationError(f"{rel} is listed in {MANIFEST} but missing from {out}")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise VerificationError(f"{rel} does not match its sha256 in {MANIFEST}: the file changed after the compile")
    lines.append(f"{len(manifest['artifacts'])} artifacts match their sha256")
    report = json.loads((out / "report.json").read_text())
    tolerance = report["verification"]["tolerance"]
    fp16_tolerance = report["verification"].get("fp16", {}).get("tolerance")
    reference = torch.load(out / REFERENCE, weights_only=True)
    results = {}
    for name, expected in reference["outputs"].items():
        for suffix, tol in ((".onnx", tolerance), (".fp16.onnx", fp16_tolerance)):
            path = out / f"{name}{suffix}"
            if not path.exists() or tol is None:
                continue
            worst, nonfinite = _compare(path, reference["inputs"], expected)
            results[path.name] = worst
            if nonfinite:
                raise VerificationError(f"{path.name} cannot be checked against the recorded torch outputs: "
                                        f"{nonfinite} (an error against NaN or Inf means nothing, so it fails)",
                                        "compile again; if the torch model itself gives NaN/Inf, check its "
                                        "weights and --data")
            if not worst <= tol:
                raise VerificationError(f"{path.name} now differs from the recorded torch outputs: "
                                        f"max relative error {worst:.2e} > {tol:.0e}")
            lines.append(f"{path.name}: max relative error {worst:.2e} <= {tol:.0e}")
    for name, check in report["verification"].get("deployed", {}).items():
        lines.append(_recheck_deployed(out, name, check, reference))
    return {"passed": True, "artifacts": len(manifest["artifacts"]), "max_rel_err": results, "lines": lines}


def _recheck_deployed(out: Path, name: str, check: dict, reference: dict) -> str:
    """A deployed (INT8 ONNX, OpenVINO IR) artifact against the torch FP32 outputs its compile checked it on,
    with the same floor."""
    from prune2deploy.context import ExampleInputs
    from prune2deploy.precision.compare import compare

    precision = check["precision"]
    ir, onnx_file = out / f"{name}.{precision}.xml", out / f"{name}.{precision}.onnx"
    if ir.exists():
        from prune2deploy.backends.ov_cpu.runner import OvRunner

        runner, path = OvRunner(ir, None, precision), ir
    elif onnx_file.exists():
        from prune2deploy.backends.ort_cpu.runner import OrtRunner

        runner, path = OrtRunner(onnx_file), onnx_file
    else:
        raise VerificationError(f"the deployed {precision} {name} model named in report.json is missing from {out}")
    sets = [ExampleInputs((), feed) for feed in reference.get("deployed_inputs", reference["inputs"])]
    outputs = reference.get("deployed_outputs", reference["outputs"])[name]
    result = compare([[(str(i), t) for i, t in enumerate(per)] for per in outputs], runner, sets, precision)
    if not result["passed"]:
        raise VerificationError(f"{path.name} now drifts from the recorded torch outputs: cosine min "
                                f"{result['cosine_min']:.4f} < {result['cosine_floor']}"
                                + ("" if result["finite"] else " (non-finite outputs)"))
    return f"{path.name}: cosine min {result['cosine_min']:.4f} >= {result['cosine_floor']} ({precision})"


def _max_rel_err(path: Path, input_sets: list, expected: list) -> float:
    """The worst max|onnx - torch| / max|torch| over the recorded sets; inf where either side is not finite."""
    return _compare(path, input_sets, expected)[0]


def _compare(path: Path, input_sets: list, expected: list) -> tuple[float, str | None]:
    """(worst relative error, None) or (inf, "NaN in the ONNX output 0 on set 2") when a value is not finite."""
    from prune2deploy.backends.ort_cpu.runner import OrtRunner

    runner = OrtRunner(path)
    worst = 0.0
    for index, (feed, outputs) in enumerate(zip(input_sets, expected)):
        got = runner.run({k: v.numpy() for k, v in feed.items()})
        for number, (ref, value) in enumerate(zip(outputs, got)):
            ref = ref.float().numpy().astype(np.float64)
            value = np.asarray(value, dtype=np.float64)
            for side, array in (("recorded torch", ref), ("ONNX", value)):
                if not bool(np.isfinite(array).all()):
                    kind = "NaN" if bool(np.isnan(array).any()) else "Inf"
                    return float("inf"), f"{kind} in the {side} output {number} on check set {index + 1}"
            if ref.shape != value.shape:
                return float("inf"), None
            scale = float(np.max(np.abs(ref))) if ref.size else 0.0
            worst = max(worst, float(np.max(np.abs(ref - value))) / (scale or 1.0) if ref.size else 0.0)
    return worst, None
