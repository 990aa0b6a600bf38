"""What p2d may replace or delete: only what it wrote itself, recognised by name *and* a marker inside it.

- An output directory (`--out`): its manifest.json carries `"written_by": "prune2deploy"` and lists every
  file in it; a `<target>/` subdirectory (several targets) counts when it is such a directory itself.
  Anything else in it (a file the user added, a hand-written manifest.json, a link) is the user's.
- A work or stage directory: a p2d name and the WORK_MARKER file p2d writes into it when creating it.

Deleting goes file by file through what the manifest lists, then removes directories only once empty, so
a file that is not p2d's survives even if it appears after the check.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from prune2deploy.errors import user_error

WRITTEN_BY = "prune2deploy"  # manifest.json's ownership marker ("written_by")
MANIFEST = "manifest.json"
WORK_MARKER = ".p2d-work"  # inside p2d's work and stage directories; never published


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a directory p2d wrote; None when there is none or it lacks p2d's marker."""
    path = Path(directory) / MANIFEST
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
            return None
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY \
            or not isinstance(manifest.get("artifacts"), dict):
        return None
    return manifest


def _children(directory: Path) -> list[Path] | None:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return None


def _entries(root: Path, directory: Path | None = None, listed: set | None = None) -> Iterator[tuple[Path, bool]]:
    """(path, p2d wrote it) for every entry below `root`, parents first; a foreign directory is not entered."""
    from prune2deploy.backends.registry import TARGETS

    if directory is None:
        directory, manifest = root, read_manifest(root)
        listed = set(manifest["artifacts"]) | {MANIFEST} if manifest else set()
    children = _children(directory)
    if children is None:  # cannot be listed, so cannot be shown to be p2d's
        yield directory, False
        return
    for entry in children:
        rel = entry.relative_to(root).as_posix()
        if entry.is_symlink():  # p2d never writes links
            yield entry, False
        elif entry.is_dir():
            if any(name.startswith(rel + "/") for name in listed):
                yield entry, True
                yield from _entries(root, entry, listed)
            elif directory == root and entry.name in TARGETS and read_manifest(entry):  # DIR/<target>/
                yield entry, True
                yield from _entries(entry)
            else:
                yield entry, False
        else:  # a regular file it listed; a fifo, socket or device is never p2d's
            yield entry, entry.is_file() and rel in listed


def first_foreign(directory: Path) -> str | None:
    """The first entry of `directory` (relative path) that p2d did not write; None when p2d wrote all of it."""
    directory = Path(directory)
    for path, owned in _entries(directory):
        if not owned:
            rel = path.relative_to(directory).as_posix() if path != directory else "."
            return rel + "/" if path.is_dir() and not path.is_symlink() else rel
    return None


def remove_output(directory: Path) -> bool:
    """Delete the files p2d wrote in `directory`, then its directories that are left empty; True if it is gone."""
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        return False
    dirs = [directory]
    for path, owned in list(_entries(directory)):
        if not owned:
            continue
        if path.is_dir():
            dirs.append(path)
        else:
            path.unlink(missing_ok=True)
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()  # only when empty: anything that is not p2d's keeps its directory
        except OSError:
            pass
    return not directory.exists()


# ---- work and stage directories ------------------------------------------------------------------------

def make_private_dir(prefix: str, parent: Path | None = None, mark: bool = True) -> Path:
    """A new directory `<prefix><random>-<pid>`, holding WORK_MARKER unless `mark` is False."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=f"-{os.getpid()}", dir=parent))
    if mark:
        mark_dir(path)
    return path


def mark_dir(path: Path) -> None:
    """Write WORK_MARKER into `path`, so p2d can later tell the directory is its own."""
    (Path(path) / WORK_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "pid": os.getpid()}) + "\n")


def is_marked_dir(path: Path, pid: int) -> bool:
    """True when `path` is a directory p2d created for process `pid` (its marker says so)."""
    marker = Path(path) / WORK_MARKER
    try:
        if Path(path).is_symlink() or marker.is_symlink():
            return False
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("written_by") == WRITTEN_BY and data.get("pid") == pid


def discard(path: Path, pid: int) -> None:
    """Remove a work/stage directory of process `pid`: whole when marked, else only what its manifest lists."""
    path = Path(path)
    if is_marked_dir(path, pid):
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_dir() and not path.is_symlink():
        remove_output(path)


# ---- where --out may point ---------------------------------------------------------------------------

def _real(path) -> Path:
    return Path(os.path.realpath(path))


def input_paths(protected: Mapping[str, object]) -> list[tuple[str, Path]]:
    """(label, path) for each value of `protected` (label -> path), and for a MODEL spec's file or directory
    (file.py:callable, hf:PATH) when it exists."""
    found = []
    for label, value in protected.items():
        text = str(value or "")
        parts = {text.rpartition(":")[0], text.partition(":")[2]} if ":" in text else set()
        found += [(f"{label} {c}", Path(c)) for c in [text, *sorted(parts - {text})]
                  if c and (c == text or Path(c).exists())]
    return found


def _guarded(protected: Mapping[str, object]) -> list[tuple[str, Path]]:
    """(what it is, path) for every path --out must neither be nor contain: as given and with links resolved."""
    places = [("the root directory", Path("/")), ("the working directory", Path.cwd()),
              ("the temporary directory", Path(tempfile.gettempdir()))]
    try:
        places.append(("your home directory", Path.home()))
    except (RuntimeError, KeyError):
        pass
    places += input_paths(protected)
    return [(label, p) for label, path in places
            for p in dict.fromkeys((Path(os.path.abspath(path)), _real(path)))]


def check_out_dir(out_dir, protected: Mapping[str, object] | None = None, flag: str = "--out",
                  hint: str | None = None) -> None:
    """UserError, before any work, unless p2d may create or replace `out_dir`.

    Refused: a path that is, or contains, any of `protected` (label -> path: the inputs of the compile),
    the working, home, temporary or root directory, or a filesystem root; and an existing non-empty
    directory that p2d did not write (see the module docstring). A new or empty directory is fine.
    """
    hint = hint or f"choose another {flag}, or a new or empty directory"
    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        raise user_error(f"{flag} {out_dir} is a symbolic link", f"pass the directory it points to, {_real(out)}")
    real = _real(out)
    guarded = _guarded(protected or {})
    for label, path in guarded:
        if path in (real, out):
            raise user_error(f"{flag} {out_dir} is {label}", hint)
    for label, path in guarded:
        if real in path.parents or out in path.parents:
            raise user_error(f"{flag} {out_dir} contains {label}", hint)
    if not real.is_dir():
        return
    if os.path.ismount(real):
        raise user_error(f"{flag} {out_dir} is a mount point (a filesystem root): p2d publishes a finished output "
                         "by renaming it onto it, which a mount point cannot take",
                         f"pass a directory inside it, e.g. {real / 'p2d-out'}")
    foreign = first_foreign(real)
    if foreign == MANIFEST and _unmarked_p2d_manifest(real / MANIFEST):
        raise user_error(f"{flag} {out_dir} was written by an earlier p2d that did not mark its outputs as its own",
                         f"{hint}; or delete that directory yourself if you no longer need it")
    if foreign:
        raise user_error(f"{flag} {out_dir} is not empty and p2d did not write {foreign} in it; p2d replaces "
                         "only a directory it wrote (manifest.json lists everything in it)", hint)


def _unmarked_p2d_manifest(path: Path) -> bool:
    """A manifest.json in the form p2d 0.1.0 wrote before outputs carried `written_by`."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 64 << 20 else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and set(manifest) == {"artifacts", "versions", "recipe"}
