"""Every deployment target, one row each from its folder under backends/. Adding a target is a new folder that
defines its `TARGETS` rows (backends/target.py) and one entry in FOLDERS below."""
from __future__ import annotations

from prune2deploy.backends import cpu, ort_cpu, ov_cpu, tensorrt, torch_cuda
from prune2deploy.backends.target import Target

FOLDERS = (cpu, ort_cpu, ov_cpu, tensorrt, torch_cuda)  # cpu first: it is the default

TARGETS: dict[str, Target] = {row.name: row for folder in FOLDERS for row in folder.TARGETS}


def availability(name: str) -> tuple[bool, str]:
    try:
        return TARGETS[name].availability()
    except Exception as exc:  # an optional backend that fails to import is simply unavailable
        return False, f"backend does not load: {exc}"
