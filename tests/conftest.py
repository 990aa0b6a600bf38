from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/fixtures holds the helpers and small models every test folder uses; `models` stays a top-level module,
# the name the CLI gives tests/fixtures/models.py when a test passes it by path, so pickled classes match.
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

from helpers import run_p2d, run_p2d_in_process


@pytest.fixture
def p2d(tmp_path):
    """Run `p2d ...` in a subprocess with tmp_path as the working directory."""
    def _run(*args, **kw):
        return run_p2d(*args, cwd=tmp_path, **kw)
    return _run


@pytest.fixture
def p2d_in_process(tmp_path):
    """Run `p2d ...` in this process (prune2deploy.cli.main) with tmp_path as the working directory, for tests
    that only read what it wrote or printed; exit codes, one-line errors and process-level behaviour: `p2d`."""
    def _run(*args, **kw):
        return run_p2d_in_process(*args, cwd=tmp_path, **kw)
    return _run
