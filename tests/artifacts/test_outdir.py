"""Output directories: atomic replacement, one writer at a time, nothing left by failures."""
from __future__ import annotations

import pytest

from helpers import publish_files
from prune2deploy.errors import UserError
from prune2deploy.artifacts.outdir import check_writable, locked, workspace


def test_publish_replaces_previous_output(tmp_path):
    out = tmp_path / "out"
    for version in ("one", "two"):
        publish_files(out, {"report.json": version})  # with a manifest: what makes it p2d's, so replaceable
    assert (out / "report.json").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no stage or retired directories


def test_failure_inside_workspace_leaves_previous_output(tmp_path):
    out = tmp_path / "out"
    publish_files(out, {"a": "good"})
    with pytest.raises(RuntimeError):
        with workspace() as work:
            (work / "a").write_text("half")
            raise RuntimeError("export failed")
    assert (out / "a").read_text() == "good"
    assert not work.exists()


def test_second_writer_fails_at_once(tmp_path):
    out = tmp_path / "out"
    with locked(out):
        with pytest.raises(UserError, match="another p2d compile is writing"):
            with locked(out):
                pass
    with locked(out):  # released afterwards
        pass
    assert not out.exists()


def test_unwritable_location(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions (root)")
        with pytest.raises(UserError, match="not writable"):
            check_writable(ro / "out")
    finally:
        ro.chmod(0o700)


def test_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_writable(tmp_path / "f")
