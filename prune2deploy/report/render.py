"""Human-readable views of report.json: the dense-vs-pruned table and report.md."""
from __future__ import annotations

from prune2deploy.report.accuracy import accuracy_lines, accuracy_markdown
from prune2deploy.report.recovery import recovery_lines, recovery_markdown
from prune2deploy.report.budget import budget_lines, budget_markdown
from prune2deploy.report.precision import precision_lines, precision_markdown
from prune2deploy.report.search import search_lines, search_markdown


def _si(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _ms(stats: dict | None, key: str) -> str:
    return f"{stats[key]:.2f}" if stats else "-"


def comparison_rows(report: dict) -> list[list[str]]:
    rows = [["model", "params", "MACs", "ONNX MB", "p50 ms", "p90 ms", "p99 ms", "CV"]]
    for name, m in report["models"].items():
        lat = m.get("latency_ms")
        rows.append([name, _si(m["params"]), _si(m["macs"]), f"{m.get('onnx_bytes', 0) / 1e6:.1f}",
                     _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), f"{lat['cv']:.1%}" if lat else "-"])
    return rows


def summary_lines(report: dict) -> list[str]:
    v = report["verification"]
    lines = [f"MAC reduction {report['mac_reduction']:.2f}x, params {report['param_reduction']:.2f}x"]
    if report.get("speedup"):
        lines.append(f"speedup (dense p50 / pruned p50) {report['speedup']:.2f}x, "
                     f"efficiency {report['efficiency']:.2f}")
    if report.get("speedup_2to4"):
        lines.append(f"speedup of pruned+2:4 over dense {report['speedup_2to4']:.2f}x")
    if report.get("sparsity"):
        lines.append(report["sparsity"]["summary"])
    if report.get("status") == "prepared":
        lines.append(f"not benchmarked: {report['next_step']}")
    lines.append(f"verification {'passed' if v['passed'] else 'FAILED'}: max abs err {v['max_abs_err']:.2e}, "
                 f"max rel err {v['max_rel_err']:.2e} (tolerance {v['tolerance']:.0e})")
    f = report["fidelity"]
    agree = f", top-1 agreement {f['top1_agreement']:.1%}" if f.get("top1_agreement") is not None else ""
    lines.append(f"fidelity over {f['samples']} samples ({f.get('inputs', 'example inputs')}): "
                 f"cosine {f['cosine_mean']:.4f} (min {f['cosine_min']:.4f}){agree}")
    lines += precision_lines(report) + budget_lines(report) + accuracy_lines(report) + recovery_lines(report) + \
        search_lines(report)
    if "fp16" in v:
        lines.append(f"FP16 ONNX max rel err {v['fp16']['max_rel_err']:.2e} (tolerance {v['fp16']['tolerance']:.0e})")
    for path, check in report.get("sparsity_check", {}).items():
        lines.append(f"{path}: {check['held']}/{check['layers']} layers hold the N:M pattern after export")
    return lines


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """report.md: the same facts as report.json, for people."""
    parts = [f"# prune2deploy report: {report['model']} on {report['target']}", "",
             f"p2d {report['p2d_version']}; device: {report['device']}; "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             markdown_table(comparison_rows(report)), ""]
    parts += [f"- {line}" for line in summary_lines(report)]
    parts += precision_markdown(report) + budget_markdown(report) + accuracy_markdown(report) + \
        recovery_markdown(report) + search_markdown(report)
    gates = report.get("gates") or {}
    if gates.get("evaluated"):
        parts += ["", f"## Gates: {'all passed' if gates['passed'] else 'FAILED'}", "", "| gate | value | result |",
                  "|---|---|---|"]
        parts += [f"| `{g['expr']}` | {g['value']:.4g} | {'pass' if g['passed'] else 'FAIL'} |"
                  for g in gates["results"]]
    if report.get("warnings"):
        parts += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    blocks = report.get("passes", {}).get("prune_channels", {}).get("attention", {}).get("blocks", [])
    if blocks:
        parts += ["", "## Attention heads", "", "| block | heads before | heads after | head dim |",
                  "|---|---|---|---|"]
        parts += [f"| {b['name']} | {b['heads_before']} | {b['heads_after']} | {b['head_dim']} |" for b in blocks]
    parts += ["", "## Layer widths", "", "| layer | type | in | out |", "|---|---|---|---|"]
    for layer in report.get("layers", []):
        def cell(side):
            a, b = layer[f"{side}_before"], layer[f"{side}_after"]
            return str(a) if a == b else f"{a} → {b}"
        parts.append(f"| {layer['name']} | {layer['type']} | {cell('in')} | {cell('out')} |")
    parts += ["", "## Stage wall time (s)", "", "| stage | s |", "|---|---|"]
    parts += [f"| {k} | {v:.2f} |" for k, v in report.get("stages_s", {}).items()]
    return "\n".join(parts) + "\n"
