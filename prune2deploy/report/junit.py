"""CI outputs: JUnit XML (one testcase per gate plus verification) and the GitHub Actions step summary.

p2d replaces a --junit file only when it wrote it (the `written_by` property), never one inside an output
directory (replaced as a whole); it appends to $GITHUB_STEP_SUMMARY only when that names a small text file
that is none of the compile's inputs or outputs.
"""
from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Mapping

from prune2deploy.errors import user_error
from prune2deploy.report.gates import GateResult
from prune2deploy.artifacts.ownership import WRITTEN_BY, input_paths

SUMMARY_MAX_BYTES = 1 << 20  # GitHub's limit for one step's summary; a bigger file is not one
JUNIT_MAX_BYTES = 16 << 20  # p2d's JUnit files are a few kB; a bigger file is not p2d's


def junit_tree(runs: list[tuple[dict, list[GateResult]]]) -> ET.ElementTree:
    """<testsuites><testsuite name="p2d"> with, per (report, gate results), a verification case and a case per gate."""
    suite = ET.Element("testsuite", name="p2d")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="written_by", value=WRITTEN_BY)  # lets a later compile replace it
    for name in ("model", "target", "device", "p2d_version"):
        value = ", ".join(dict.fromkeys(str(r.get(name)) for r, _ in runs if r.get(name) is not None))
        if value:
            ET.SubElement(props, "property", name=name, value=value)
    cases = failures = skipped = 0
    for report, results in runs:
        classname = f"p2d.{report.get('target', 'unknown')}"
        case = ET.SubElement(suite, "testcase", classname=classname, name="verification", time="0")
        verification = report.get("verification")
        if not verification:
            ET.SubElement(case, "skipped", message="the report has no verification")
            skipped += 1
        elif not verification.get("passed"):
            ET.SubElement(case, "failure", message=_verification_text(verification), type="VerificationError")
            failures += 1
        else:
            ET.SubElement(case, "system-out").text = _verification_text(verification)
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=classname, name=f"gate {r.expr}", time="0")
            text = f"{r.field} = {r.value:.6g}, needs {r.op} {r.threshold:g}"
            if r.passed:
                ET.SubElement(case, "system-out").text = text
            else:
                ET.SubElement(case, "failure", message=text, type="GateFailed")
                failures += 1
        cases += 1 + len(results)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", f"{sum(float(r.get('wall_s') or 0) for r, _ in runs):.3f}")
    root = ET.Element("testsuites", name="p2d", tests=str(cases), failures=str(failures), errors="0")
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str | Path, report: dict, gate_results: list[GateResult]) -> None:
    """Write the JUnit XML of one compile; atomic (temp file + os.replace), so CI never reads half a file."""
    write_junit_runs(path, [(report, gate_results)])


def write_junit_runs(path: str | Path, runs: list[tuple[dict, list[GateResult]]]) -> None:
    """Like write_junit for a compile of several targets: one (report, gate results) pair per target."""
    path = Path(path)
    check_junit_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            junit_tree(runs).write(f, encoding="utf-8", xml_declaration=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; CI uploaders may run as another user
        check_junit_path(path)  # again: something may have appeared there during the compile
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _inside(path: Path, directory: Path) -> bool:
    pairs = ((Path(os.path.abspath(path)), Path(os.path.abspath(directory))),
             (Path(os.path.realpath(path)), Path(os.path.realpath(directory))))
    return any(d == p or d in p.parents for p, d in pairs)


def _written_by_p2d(path: Path) -> bool:
    """A JUnit file carrying p2d's `written_by` property."""
    try:
        if path.stat().st_size > JUNIT_MAX_BYTES:
            return False
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return False
    return root.tag == "testsuites" and any(
        p.get("name") == "written_by" and p.get("value") == WRITTEN_BY for p in root.iter("property"))


def check_junit_path(path, out_dirs: Iterable = ()) -> None:
    """UserError unless `path` is new or a JUnit file p2d wrote, and outside every output directory."""
    path = Path(path)
    hint = "choose another --junit path"
    for out in out_dirs:
        if _inside(path, Path(out)):
            raise user_error(f"--junit {path} is inside --out {out}, which p2d replaces as a whole", hint)
    if path.is_symlink():
        raise user_error(f"--junit {path} is a symbolic link", hint)
    if path.is_dir():
        raise user_error(f"--junit {path} is a directory", "name a file, e.g. --junit p2d-junit.xml")
    if path.exists() and not _written_by_p2d(path):
        raise user_error(f"--junit {path} exists and is not a JUnit file p2d wrote", f"{hint}, or move that file")


def _summary_problem(path: Path, protected: Mapping[str, object], out_dirs: Iterable) -> str | None:
    """Why p2d must not append to `path` ($GITHUB_STEP_SUMMARY); None when it may."""
    for label, place in input_paths(protected):
        if _inside(path, place):
            return f"which is {label}" if _inside(place, path) else f"which is inside {label}"
    for out in out_dirs:
        if _inside(path, Path(out)):
            return f"which is inside the output directory {out}"
    if path.is_symlink():
        return "a symbolic link"
    if not path.exists():
        return None
    if not path.is_file():
        return "not a regular file"
    try:
        if path.stat().st_size > SUMMARY_MAX_BYTES:
            return f"larger than a step summary can be ({SUMMARY_MAX_BYTES >> 20} MiB)"
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not a text file"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return "not a text file" if b"\0" in data else None


def check_step_summary(protected: Mapping[str, object] | None = None, out_dirs: Iterable = ()) -> None:
    """UserError, before any work, when $GITHUB_STEP_SUMMARY names a file p2d must not append to."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    problem = target and _summary_problem(Path(target), protected or {}, out_dirs)
    if problem:
        raise user_error(f"$GITHUB_STEP_SUMMARY names {target}, {problem}",
                         "point it at the job's step summary file, or pass --no-step-summary")


def append_step_summary(markdown: str) -> bool:
    """Append to the file $GITHUB_STEP_SUMMARY names; False when it is unset, not a small text file, or
    cannot be written."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or _summary_problem(Path(target), {}, ()):
        return False
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError:
        return False
    return True


def _verification_text(v: dict) -> str:
    worst = f" ({v['worst_model']} model, output {v['worst_output']})" if v.get("worst_model") else ""
    err, tol = v.get("max_rel_err", float("nan")), v.get("tolerance", float("nan"))
    return f"max_rel_err {err:.3g} vs tolerance {tol:g}{worst}"
