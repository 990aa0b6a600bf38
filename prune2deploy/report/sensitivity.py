"""`p2d sensitivity`'s views: sensitivity.md and sensitivity.png from the measured result."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.report.plots import no_matplotlib, pyplot, save

PLOT = "sensitivity.png"


def markdown(result: dict) -> str:
    ratios = result["ratios"]
    lines = ["# Sensitivity: one group pruned at a time", "",
             f"Metric: {result['metric']} on {result['validation_samples']} samples (dense {result['dense_score']:.4g}). "
             f"Cost saved: {result['cost']} ({result['unit']}; dense {result['dense_cost']:.4g}) measured by "
             f"{result['measured_by']}. Most fragile group first (mean metric drop over the ratios).", "",
             "| group | kind | dense | mean drop | " + " | ".join(f"{r:g}" for r in ratios) + " |",
             "|---|---|---|---|" + "---|" * len(ratios)]
    for row in result["groups"]:
        cells = [f"{p['score']:.4g} / {p['saved']:.3g}" for p in row["points"]]
        lines.append(f"| {row['name']} | {row['kind']} | {row['dense']} | {row['mean_drop']:.4g} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Each cell: metric / {result['cost']} saved ({result['unit']}) with only that group pruned at "
              "that ratio (its kept width rounded to round_to)."]
    if result.get("plot"):
        lines += ["", result["plot"] if result["plot"] != "sensitivity.png" else "![sensitivity](sensitivity.png)"]
    return "\n".join(lines) + "\n"


def plot_sensitivity(result: dict, path: Path) -> str:
    """sensitivity.png: metric vs ratio per group, and latency (or MACs) saved vs ratio."""
    plt = pyplot()
    if plt is None:
        return no_matplotlib(path.name)
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(11, 4.5))
    for row in result["groups"]:
        ratios = [p["ratio"] for p in row["points"]]
        ax_m.plot(ratios, [p["score"] for p in row["points"]], marker="o", label=row["name"])
        ax_l.plot(ratios, [p["saved"] for p in row["points"]], marker="o", label=row["name"])
    ax_m.axhline(result["dense_score"], linestyle="--", color="gray")
    ax_m.set(xlabel="ratio removed from the group", ylabel=result["metric"], title="metric (one group pruned)")
    ax_l.set(xlabel="ratio removed from the group", ylabel=f"{result['cost']} saved ({result['unit']})",
             title=f"{result['cost']} saved on {result['target']}")
    ax_l.legend(fontsize=6, ncol=2)
    save(plt, fig, path)
    return path.name
