"""The wheel holds every module of the source tree (a hand-written package list once missed drivers/).
Installing the wheel and compiling from it is .ci/wheel_smoke (run by .ci/run after the tests)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import REPO


def _built_wheel(tmp_path: Path) -> Path:
    """Built from a copy of the files git sees: a stale build/ folder in the checkout must not fill gaps."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(src)], check=True, capture_output=True, text=True)
    return next(tmp_path.glob("prune2deploy-*.whl"))


def test_wheel_holds_every_module_and_the_entry_point(tmp_path):
    names = set(zipfile.ZipFile(_built_wheel(tmp_path)).namelist())
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "prune2deploy").rglob("*.py")}
    expected |= {"prune2deploy/backends/" + p.relative_to(REPO / "backends").as_posix()
                 for p in (REPO / "backends").rglob("*.py")}
    expected = {n for n in expected if "__pycache__" not in n}
    assert {"prune2deploy/backends/torch_cuda/driver.py", "prune2deploy/backends/torch_cuda/runner.py"} <= expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith(("backends/", "tests/", "benchmarks/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "p2d = prune2deploy.cli:main" in zipfile.ZipFile(next(tmp_path.glob("prune2deploy-*.whl"))).read(entry_points).decode()
