"""CI outputs: JUnit XML (one testcase per gate plus verification) and the GitHub Actions step summary."""
from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .gates import GateResult


def junit_tree(runs: list[tuple[dict, list[GateResult]]]) -> ET.ElementTree:
    """<testsuites><testsuite name="p2d"> with, per (report, gate results), a verification case and a case per gate."""
    suite = ET.Element("testsuite", name="p2d")
    props = ET.SubElement(suite, "properties")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            junit_tree(runs).write(f, encoding="utf-8", xml_declaration=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; CI uploaders may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_step_summary(markdown: str) -> bool:
    """Append to the file $GITHUB_STEP_SUMMARY names; False when it is unset or cannot be written."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
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
