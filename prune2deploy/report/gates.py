"""Release gates: `--gate 'speedup>=2.5'` checks one numeric field of report.json so CI can fail a release.

A gate is FIELD OP NUMBER. FIELD is a dotted path into the report (`models.pruned.latency_ms.p99`; a number
segment indexes a list), OP one of < <= > >= ==. A failed gate is GateFailed (exit 3); a gate that names no
numeric field is a UserError (exit 2): a typo must not read as a slow model.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from prune2deploy.config.values import OPERATORS, Gate
from prune2deploy.errors import GateFailed, user_error

_MISSING = object()


@dataclass(frozen=True)
class GateResult:
    expr: str
    field: str
    op: str
    threshold: float
    value: float
    passed: bool


def numeric_fields(report: dict, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of the report by dotted path (booleans excluded)."""
    out: dict[str, float] = {}
    items = report.items() if isinstance(report, dict) else enumerate(report)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            out.update(numeric_fields(value, path + "."))
        elif _is_number(value):
            out[path] = float(value)
    return out


def check_gate_fields(gates: list[Gate], report: dict) -> dict[str, float]:
    """The value of each gate's field; UserError naming the first field that is missing or not a number."""
    values = {}
    for gate in gates:
        value = _lookup(report, gate.field)
        if not _is_number(value):
            what = "does not exist" if value is _MISSING else f"is {_describe(value)}, not a number"
            raise user_error(f"gate {gate.expr!r}: report field {gate.field!r} {what}",
                             _close_fields(gate.field, report))
        values[gate.field] = float(value)
    return values


def evaluate(gates: list[Gate], report: dict) -> list[GateResult]:
    """Compare each gate with the report; fields are checked first (UserError), then compared (never raises)."""
    values = check_gate_fields(gates, report)
    return [GateResult(g.expr, g.field, g.op, g.threshold, values[g.field],
                       bool(OPERATORS[g.op](values[g.field], g.threshold))) for g in gates]


def failures(results: list[GateResult]) -> list[GateResult]:
    """The results that did not pass, in gate order."""
    return [r for r in results if not r.passed]


def raise_if_failed(results: list[GateResult]) -> None:
    """GateFailed (exit 3) with one line naming each failed gate and its value."""
    bad = failures(results)
    if bad:
        listed = ", ".join(f"{r.expr} (value {_fmt(r.value)})" for r in bad)
        raise GateFailed(f"{len(bad)} of {len(results)} gates failed: {listed}")


def gate_table(results: list[GateResult]) -> str:
    """Plain-text table for the terminal: gate, value, pass/FAIL."""
    rows = [("gate", "value", "result")] + [(r.expr, _fmt(r.value), "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def gate_markdown(results: list[GateResult]) -> str:
    """Markdown table for report.md and the GitHub step summary."""
    lines = [f"### Gates: {len(results) - len(failures(results))} of {len(results)} passed", "",
             "| gate | value | result |", "| --- | ---: | --- |"]
    lines += [f"| `{r.expr}` | {_fmt(r.value)} | {'pass' if r.passed else '**FAIL**'} |" for r in results]
    return "\n".join(lines) + "\n"


def _lookup(report, field: str):
    node = report
    for part in field.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value) -> str:
    if value is None:
        return "null (not measured in this run)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a string ({value!r})"


def _close_fields(field: str, report: dict) -> str:
    """Hint: numeric fields close to `field` (whole path, then last segment), else the top-level ones."""
    known = list(numeric_fields(report))
    close = difflib.get_close_matches(field, known, n=3, cutoff=0.6)
    if not close:
        last = field.rsplit(".", 1)[-1]
        close = [k for k in known if k.rsplit(".", 1)[-1] == last][:3] or \
            [k for k in known if k.startswith(field + ".")][:3]
    if not close:
        close = [k for k in known if "." not in k][:6]
    return "numeric fields include " + ", ".join(close) if close else "the report has no numeric fields"


def _fmt(value: float) -> str:
    return f"{value:.4g}"
