"""manifest.json (every artifact with sha256 and size, tool versions, the resolved recipe) and
`p2d verify`, which re-checks the hashes and re-runs the numerical verification from recorded outputs."""
from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from prune2deploy.errors import VerificationError, user_error
from prune2deploy.artifacts.ownership import MANIFEST, WORK_MARKER, WRITTEN_BY
REFERENCE = "verification_data.pt"  # example/random inputs and the torch outputs for each model


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tool_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torch-pruning", "onnx", "onnxruntime", "onnxslim", "tensorrt", "transformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def save_reference(path: Path, check_sets: list, references: dict) -> None:
    """Inputs and each model's torch outputs (name -> verify.reference_outputs), so `p2d verify` needs no
    model code (loads weights-only)."""
    data = {"inputs": [dict(zip(s.names, s.tensors())) for s in check_sets],
            "outputs": {name: [[t for _, t in outputs] for outputs in per_set] for name, per_set in references.items()}}
    torch.save(data, path)


def write_manifest(out: Path, recipe: dict) -> dict:
    """manifest.json: every file in `out` and `"written_by": "prune2deploy"`, the mark that lets a later
    compile replace the directory (ownership.py)."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in (MANIFEST, WORK_MARKER)):
        files[path.relative_to(out).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"written_by": WRITTEN_BY, "artifacts": files, "versions": tool_versions(), "recipe": recipe}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


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
            worst = _max_rel_err(path, reference["inputs"], expected)
            results[path.name] = worst
            if worst > tol:
                raise VerificationError(f"{path.name} now differs from the recorded torch outputs: "
                                        f"max relative error {worst:.2e} > {tol:.0e}")
            lines.append(f"{path.name}: max relative error {worst:.2e} <= {tol:.0e}")
    return {"passed": True, "artifacts": len(manifest["artifacts"]), "max_rel_err": results, "lines": lines}


def _max_rel_err(path: Path, input_sets: list, expected: list) -> float:
    from prune2deploy.backends.ort_cpu.runner import OrtRunner

    runner = OrtRunner(path)
    worst = 0.0
    for feed, outputs in zip(input_sets, expected):
        got = runner.run({k: v.numpy() for k, v in feed.items()})
        for ref, value in zip(outputs, got):
            ref = ref.float().numpy().astype(np.float64)
            scale = float(np.max(np.abs(ref))) or 1.0
            worst = max(worst, float(np.max(np.abs(ref - np.asarray(value, dtype=np.float64)))) / scale)
    return worst
