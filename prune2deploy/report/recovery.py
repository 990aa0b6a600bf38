"""The report's views of recovery: a line for the terminal, a report.md section, and recovery.png."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.report.plots import no_matplotlib, pyplot, save

PLOT = "recovery.png"
NO_MATPLOTLIB = no_matplotlib(PLOT)


def _fmt(value, unit: str) -> str:
    return "-" if value is None else (f"{value:.2f}%" if unit == "%" else f"{value:.4f}")


def recovery_lines(report: dict) -> list[str]:
    rec = report.get("recovery")
    if not rec:
        return []
    resumed = f", resumed from {rec['resumed_from']}" if rec.get("resumed_from") else ""
    return [f"recovery: {rec['method']}, {rec['epochs']} epochs, {rec['steps']} steps in {rec['wall_s']:.1f} s "
            f"on {rec['world_size']} process(es){resumed}"]


def recovery_markdown(report: dict) -> list[str]:
    rec = report.get("recovery")
    if not rec:
        return []
    unit = (report.get("accuracy") or {}).get("unit", "")
    lines = ["", f"## Recovery: {rec['method']}", "",
             f"{rec['epochs']} epochs, {rec['steps']} steps, {rec['wall_s']:.1f} s, world size {rec['world_size']}"
             + (f", resumed from {rec['resumed_from']}" if rec.get("resumed_from") else "")
             + "; settings: " + ", ".join(f"{k} {v}" for k, v in rec["settings"].items() if v not in (None, [])), "",
             "| stage | epoch | step | loss | validation metric |", "|---|---|---|---|---|"]
    lines += [f"| {p['stage']} | {p['epoch']} | {p['step']} | {p['loss']:.4f} | {_fmt(p['metric'], unit)} |"
              for p in rec["curve"]]
    if rec.get("plot"):
        lines += ["", rec["plot"] if rec["plot"] != PLOT else f"![recovery curve]({PLOT})"]
    return lines


def write_plot(record: dict, metric_name: str, path: Path) -> str:
    """recovery.png of the per-epoch loss and validation metric; the note to report when matplotlib is absent."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    curve = record["curve"]
    x = list(range(1, len(curve) + 1))
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(x, [p["loss"] for p in curve], marker="o")
    ax_loss.set(xlabel="epoch (all stages)", ylabel="training loss", title="recovery loss")
    ax_metric.plot(x, [p["metric"] for p in curve], marker="o", label="after epoch")
    if record["after_bn_recalibration"] is not None:
        ax_metric.axhline(record["after_bn_recalibration"], linestyle="--", color="gray", label="after BN re-est.")
    ax_metric.set(xlabel="epoch (all stages)", ylabel=metric_name, title="validation")
    ax_metric.legend()
    save(plt, fig, path)
    return PLOT


def add_to_report(report: dict, record: dict, metric, work: Path) -> dict:
    """report.recovery, and report.accuracy's after_prune / after_bn_recalibration (measured before recovery;
    `pruned`, the exported model, after it); writes recovery.png into `work` when matplotlib is there."""
    report["recovery"] = record
    accuracy = report.get("accuracy")
    if accuracy and record["after_prune"] is not None:  # None: --resume skipped past the last step
        accuracy["after_prune"] = record["after_prune"]
        accuracy["after_bn_recalibration"] = record["after_bn_recalibration"]
        accuracy["drop"] = metric.drop(accuracy["dense"], accuracy["pruned"])
    record["plot"] = write_plot(record, metric.name, work / PLOT) if record["curve"] else None
    return {PLOT: work / PLOT} if record["plot"] == PLOT else {}
