"""The CLI under signals and failing disks: SIGTERM/SIGHUP behave like Ctrl-C, a mount point or a full disk is
one line naming the path (TMPDIR when it is the culprit), flag errors are one line, lock files go away."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import MODELS, assert_user_error, slow_except

RESNET = [f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32"]


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MB tmpfs mounted under tmp_path (root only; CI runs as root)."""
    mounts = []

    def mount(name: str, size: str = "1m") -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point
    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _env(tmp_path, **extra):
    return {**os.environ, "CI": "1", "P2D_CACHE_DIR": str(tmp_path / ".cache"), "GITHUB_STEP_SUMMARY": "", **extra}


@pytest.mark.parametrize("sig", slow_except([signal.SIGTERM, signal.SIGHUP], signal.SIGTERM))
def test_a_signal_stops_like_ctrl_c(tmp_path, sig):
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "prune2deploy", "compile", *RESNET, "--out", "out",
                             "--bench-seconds", "30", "--no-cache"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path, TMPDIR=str(tmp_path / "tmp")))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any((tmp_path / "tmp").glob("p2d-work-*")):
        time.sleep(0.2)  # the compile has a work directory: the signal lands mid-compile
    time.sleep(1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert lines == [f"error: stopped by {signal.Signals(sig).name}; the previous output directory is untouched"]
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "tmp").glob("p2d-work-*"))  # the work directory was removed
    assert not list((tmp_path / "tmp").glob("p2d-locks/*.lock"))


@pytest.mark.slow
def test_lock_files_are_removed_when_released(p2d, tmp_path):
    import hashlib

    lock = Path(tempfile.gettempdir()) / "p2d-locks" / f"{hashlib.sha1(str(tmp_path / 'out').encode()).hexdigest()[:16]}.lock"
    r = p2d("compile", *RESNET, "--out", "out", "--no-benchmark")
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / "report.json").exists() and not lock.exists()


def test_a_mount_point_as_out_is_refused_up_front(p2d, tmpfs):
    point = tmpfs("mnt")
    r = p2d("compile", *RESNET, "--out", str(point), "--no-benchmark")
    assert_user_error(r, "is a mount point", str(point), "p2d-out")
    assert list(point.iterdir()) == []


def test_out_on_a_full_disk_is_one_line(p2d, tmpfs):
    point = tmpfs("small")
    r = p2d("compile", *RESNET, "--out", str(point / "out"), "--no-benchmark")
    assert_user_error(r, str(point))
    assert list(point.iterdir()) == []


def test_a_full_tmpdir_is_named(tmp_path, tmpfs):
    point = tmpfs("tmp")
    run = subprocess.run([sys.executable, "-m", "prune2deploy", "compile", *RESNET, "--out", "out",
                          "--no-benchmark", "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         env=_env(tmp_path, TMPDIR=str(point)))
    from helpers import Run

    assert_user_error(Run(run.returncode, run.stdout, run.stderr), "TMPDIR", str(point))
    assert not (tmp_path / "out").exists()


def test_a_flag_error_is_one_line_without_importing_torch(tmp_path):
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "prune2deploy", "compile", "--ratio", "abc"],
                         cwd=tmp_path, capture_output=True, text=True)
    lines = [line for line in run.stderr.splitlines() if not line.startswith("import time:")]
    assert run.returncode == 2
    assert lines == ["error: argument --ratio: invalid float value: 'abc' (hint: p2d compile --help)"]
    assert not [line for line in run.stderr.splitlines() if line.endswith("| torch")]
    assert time.monotonic() - start < 30
