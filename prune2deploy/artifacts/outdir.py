"""Output directories that are replaced atomically and written by one compile at a time.

A compile works in a private temporary directory; on success that directory and the old output
are swapped in one step (renameat2 RENAME_EXCHANGE on Linux), so a crash or kill -9 at any
moment leaves either the previous good output or the new one, never a mix. Only what p2d wrote is
ever replaced or removed (ownership.py): the old output file by file from its manifest, work and stage
directories when their name and marker file say they are p2d's.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from prune2deploy.errors import user_error
from prune2deploy.artifacts.ownership import WORK_MARKER, discard, first_foreign, make_private_dir, mark_dir

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the platform cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(err, os.strerror(err), str(b))
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WORK_PREFIX = "p2d-work-"
_WORK_NAME = re.compile(r"p2d-work-[A-Za-z0-9_]+-(\d+)")


def _stage_name(out_dir: Path) -> re.Pattern:
    """Stage/retired directories next to `out_dir`: `.NAME.p2d-stage-<random>-<pid>` (older p2d: no random)."""
    return re.compile(rf"\.{re.escape(out_dir.name)}\.p2d-(?:stage|retired)-(?:[A-Za-z0-9_]+-)?(\d+)")


def _remove_stale(root: Path, name: re.Pattern = _WORK_NAME) -> None:
    """Work or stage directories left by compiles that were killed (their pid is gone).

    A directory goes only when its whole name matches and p2d's marker says it is p2d's (whole directory),
    or its p2d manifest lists the files (those files only); anything else is left alone.
    """
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        match = name.fullmatch(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            discard(Path(entry.path), int(match.group(1)))


def check_writable(out_dir: Path) -> None:
    """Fail early, before any work, when `out_dir` cannot be created or replaced."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise user_error(f"--out {out_dir} exists and is not a directory", "choose another --out")
    ancestor = out_dir.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise user_error(f"output location {ancestor} is not writable", "choose another --out")


@contextmanager
def locked(out_dir: Path):
    """Hold an exclusive lock on `out_dir` for one compile; a second compile fails at once.

    The lock file lives in the temp directory, so a compile that fails leaves nothing next to `out_dir`, and
    it is removed when released. A lock taken on a file that was removed meanwhile is no lock: take it again.
    """
    out_dir = Path(out_dir).absolute()
    locks = Path(tempfile.gettempdir()) / "p2d-locks"
    locks.mkdir(exist_ok=True)
    path = locks / f"{hashlib.sha1(str(out_dir).encode()).hexdigest()[:16]}.lock"
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise user_error(f"another p2d compile is writing {out_dir} right now",
                             "wait for it to finish or choose another --out") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed it as we opened it
    try:
        yield out_dir
    finally:
        try:
            path.unlink()  # while still holding it: nobody can be holding the file we remove
        except OSError:
            pass
        os.close(fd)


_CAUSES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
           errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
           errno.EROFS: "read-only file system", errno.EBUSY: "device or resource busy (a mount point?)",
           errno.EXDEV: "cannot move across file systems", errno.ENAMETOOLONG: "file name too long",
           errno.EMFILE: "too many open files"}
USER_ERRNOS = frozenset(_CAUSES)


def os_error_line(exc: OSError) -> tuple[int | None, str, str] | None:
    """(errno, message, hint) for an OSError a user can act on (full disk, permissions, read-only, busy mount),
    naming the path and TMPDIR when the path is under it; None for anything else (an internal error).
    A shutil.Error (a copy that failed part-way) is judged by its first failure."""
    code, path, text = exc.errno, exc.filename, exc.strerror
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        src, dst, why = exc.args[0][0]
        path, text = dst, str(why)
        code = next((c for c, name in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "quota"),
                                        (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only"))
                     if name in text), None)
    if code not in _CAUSES:
        return None
    cause = _CAUSES[code]
    where = f"{path}" if path else "while writing"
    tmp = Path(tempfile.gettempdir())
    if path and (Path(path) == tmp or tmp in Path(os.path.abspath(path)).parents):
        return code, f"{cause}: {where} (TMPDIR={tmp}, where p2d builds its output before publishing it)", \
            "free space there or set TMPDIR to a directory with room; the previous output directory is untouched"
    hint = "free some space or choose another --out" if code in (errno.ENOSPC, errno.EDQUOT) else \
        "pass a directory inside it as --out" if code == errno.EBUSY else "choose another --out"
    return code, f"{cause}: {where}", f"{hint}; the previous output directory is untouched"


def check_space(need_bytes: int, out_dir: Path) -> None:
    """Refuse before the expensive stages when TMPDIR (where the output is built) or, on another file system,
    --out's cannot hold `need_bytes`."""
    tmp = Path(tempfile.gettempdir())
    places = [("TMPDIR", tmp)]
    target = Path(out_dir).absolute()
    while not target.exists():
        target = target.parent
    try:
        if os.stat(target).st_dev != os.stat(tmp).st_dev:
            places.append(("--out", target))
        for label, place in places:
            free = shutil.disk_usage(place).free
            if free < need_bytes:
                raise user_error(f"{label} {place} has {free / 1e9:.2f} GB free; this compile needs about "
                                 f"{need_bytes / 1e9:.2f} GB there (ONNX files and the pruned model)",
                                 "free some space, or set TMPDIR / choose another --out on a disk with room")
    except OSError:
        return  # cannot tell: the writes themselves will say


@contextmanager
def workspace():
    """A private temporary directory for one compile's artifacts (marked as p2d's); always removed afterwards."""
    root = Path(tempfile.gettempdir())
    _remove_stale(root)
    work = make_private_dir(WORK_PREFIX)
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published output should not be
    try:
        yield work
    finally:
        discard(work, os.getpid())


def publish_dir(work: Path, out_dir: Path) -> None:
    """Move the finished `work` directory to `out_dir`, replacing the previous output in one step.

    `work` must hold a p2d manifest.json (manifest.write_manifest); an existing `out_dir` is replaced only
    when p2d wrote all of it, checked again here in case something was added during the compile.
    """
    out_dir = Path(os.path.abspath(out_dir))
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(out_dir.parent, _stage_name(out_dir))
        stage = make_private_dir(f".{out_dir.name}.p2d-stage-", out_dir.parent, mark=False)
        try:
            try:
                os.rename(work, stage)  # onto the empty stage directory; the marker comes along from work
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                mark_dir(stage)  # before copying: a copy cut short is still known as p2d's
                shutil.copytree(work, stage, dirs_exist_ok=True)
            _fsync_tree(stage)
            if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
                raise user_error(f"{out_dir} became a link or a file during the compile; nothing was replaced",
                                 "choose another --out")
            foreign = first_foreign(out_dir) if out_dir.is_dir() else None
            if foreign:
                raise user_error(f"{foreign} appeared in {out_dir} during the compile; nothing was replaced",
                                 "move it elsewhere and compile again, or choose another --out")
            (stage / WORK_MARKER).unlink()
            publish(stage, out_dir)
        finally:
            discard(stage, os.getpid())  # the new output if publishing failed, else the old one
    except OSError as exc:
        line = os_error_line(exc)
        if line is None:
            raise
        raise user_error(f"cannot publish {out_dir}: {line[1]}", line[2]) from exc


def publish(stage: Path, out_dir: Path) -> None:
    """Make `stage` the new `out_dir`; the old one (if any) ends up at `stage` for deletion."""
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    if _exchange(stage, out_dir):
        return
    retired = make_private_dir(f".{out_dir.name}.p2d-retired-", out_dir.parent, mark=False)
    os.rename(out_dir, retired)  # onto the empty directory just made
    os.rename(stage, out_dir)
    os.rename(retired, stage)  # the caller removes what p2d wrote in it


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a single file via a temporary sibling and os.replace."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    mode = "w" if isinstance(data, str) else "wb"
    with open(tmp, mode) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
