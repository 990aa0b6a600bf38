"""The report's views of the precision stage: which precision was deployed and why, what INT8 calibrated on,
how the deployed artifacts compare with torch FP32, and the speedup over the dense model in FP32."""
from __future__ import annotations


def _checks(report: dict) -> dict:
    return report.get("verification", {}).get("deployed", {})


def precision_lines(report: dict) -> list[str]:
    p = report.get("precision")
    if not p:
        return []
    lines = [f"precision {p['deployed']} ({'auto: ' if p['requested'] == 'auto' else ''}{p['why']})"]
    if p.get("calibration"):
        c = p["calibration"]
        lines.append(f"INT8 calibrated on {c['samples']} samples of {c['source']}")
    for name, check in _checks(report).items():
        agree = f", top-1 agreement {check['top1_agreement']:.1%}" if check.get("top1_agreement") is not None else ""
        lines.append(f"{name} ({check['precision']}) vs torch FP32 on {check['input_sets']} input sets: cosine min "
                     f"{check['cosine_min']:.4f} (floor {check['cosine_floor']}){agree}"
                     f"{'' if check['passed'] else ' FAILED'}")
    grid = two_by_two(report)
    if grid:
        lines += grid
    elif report.get("speedup_vs_dense_fp32") and p["deployed"] != "fp32":
        lines.append(f"speedup vs the dense model in FP32 (dense_fp32 p50 / pruned p50) "
                     f"{report['speedup_vs_dense_fp32']:.2f}x")
    return lines


def two_by_two(report: dict) -> list[str]:
    """Pruning x precision, p50 ms on the deployed runtime, and what each factor bought on its own."""
    models, deployed = report.get("models", {}), report.get("precision", {}).get("deployed")
    cells = {(n, c): models.get(n + ("_fp32" if c == "fp32" else ""), {}).get("latency_ms")
             for n in ("dense", "pruned") for c in ("fp32", deployed)}
    if deployed in (None, "fp32") or not all(cells.values()):
        return []
    runtime = report.get("benchmark", {}).get("settings", {}).get("backend", "")
    p50 = {k: v["p50"] for k, v in cells.items()}
    rows = [["p50 ms" + (f" ({runtime})" if runtime else ""), "fp32", deployed]]
    rows += [[n, f"{p50[n, 'fp32']:.3g}", f"{p50[n, deployed]:.3g}"] for n in ("dense", "pruned")]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.append(f"pruning alone {p50['dense', 'fp32'] / p50['pruned', 'fp32']:.2f}x (fp32), "
                 f"{p50['dense', deployed] / p50['pruned', deployed]:.2f}x ({deployed}); {deployed} alone {p50['dense', 'fp32'] / p50['dense', deployed]:.2f}x, both (dense fp32 / pruned "
                 f"{deployed}) {p50['dense', 'fp32'] / p50['pruned', deployed]:.2f}x")
    return lines


def precision_markdown(report: dict) -> list[str]:
    p = report.get("precision")
    if not p:
        return []
    lines = ["", "## Precision", "", f"Deployed {p['deployed']}: {p['why']}."]
    if p.get("calibration"):
        lines += ["", f"INT8 calibration: {p['calibration']['samples']} samples of {p['calibration']['source']}."]
    checks = _checks(report)
    if checks:
        lines += ["", "| model | precision | cosine min | cosine mean | top-1 agreement | max rel err | passed |",
                  "|---|---|---|---|---|---|---|"]
        for name, c in checks.items():
            agree = f"{c['top1_agreement']:.1%}" if c.get("top1_agreement") is not None else "-"
            mean = f"{c['cosine_mean']:.4f}" if c.get("cosine_mean") is not None else "-"
            lines.append(f"| {name} | {c['precision']} | {c['cosine_min']:.4f} | {mean} | {agree} | "
                         f"{c['max_rel_err']:.2e} | {c['passed']} |")
    if report.get("speedup_vs_dense_fp32"):
        lines += ["", f"Speedup of the pruned model over the dense model in FP32 on the same runtime: "
                      f"{report['speedup_vs_dense_fp32']:.2f}x (pruning alone, same precision: {report['speedup']:.2f}x)."]
    return lines
