"""manifest.json (every artifact with sha256 and size, tool versions, the resolved recipe) and
`p2d verify`, which re-checks the hashes and re-runs the numerical verification from recorded outputs."""
from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


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


def save_reference(path: Path, check_sets: list, references: dict, deployed_sets: list | None = None,
                   deployed_references: dict | None = None) -> None:
    """Inputs and each model's torch outputs (name -> verify.reference_outputs), so `p2d verify` needs no
    model code (loads weights-only); with a lower deployed precision, the sets its artifacts were checked on too."""
    def outputs(refs: dict) -> dict:
        return {name: [[t for _, t in per] for per in per_set] for name, per_set in refs.items()}

    data = {"inputs": [dict(zip(s.names, s.tensors())) for s in check_sets], "outputs": outputs(references)}
    if deployed_sets:
        data["deployed_inputs"] = [dict(zip(s.names, s.tensors())) for s in deployed_sets]
        data["deployed_outputs"] = outputs(deployed_references)
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
