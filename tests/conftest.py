from __future__ import annotations

import pytest

from helpers import run_p2d


@pytest.fixture
def p2d(tmp_path):
    """Run `p2d ...` in a subprocess with tmp_path as the working directory."""
    def _run(*args, **kw):
        return run_p2d(*args, cwd=tmp_path, **kw)
    return _run
