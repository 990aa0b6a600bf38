"""The report's views of a --max-drop search: the frontier (every candidate measured), the one chosen and why,
and frontier.png (speedup vs metric drop, the floor drawn)."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.report.plots import no_matplotlib, pyplot, save
from prune2deploy.search.max_drop import label_of

PLOT = "frontier.png"


def add_search(report: dict, record: dict, work: Path) -> dict:
    """report["search"] and its plot; the files it wrote (name -> path)."""
    report["search"] = record
    record["plot"] = plot_frontier(record, work / PLOT)
    return {PLOT: work / PLOT} if record["plot"] == PLOT else {}


def _x(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}x" if value is not None else "-"


def ratio_label(c: dict) -> str:
    """A candidate record's ratio as the search names it: '0.5', or '0.5 per-group'."""
    return label_of(c["ratio"], c.get("allocation", "uniform"))


def search_lines(report: dict) -> list[str]:
    s = report.get("search")
    if not s:
        return []
    measured = sum(c["status"] == "measured" for c in s["candidates"])
    c = s["chosen"]
    return [f"search (--max-drop {s['max_drop']:g}, {s['metric']} on validation data): {measured} of "
            f"{len(s['candidates'])} candidates measured in {s['wall_s']:.0f} s; chose ratio {ratio_label(c)} on "
            f"{c['target']} {c['deployed']}: {s['why']}"]


def search_markdown(report: dict) -> list[str]:
    s = report.get("search")
    if not s:
        return []
    lines = ["", "## Search: the fastest artifact within --max-drop", "",
             f"Floor: {s['metric']} at most {s['max_drop']:g} below the dense FP32 model, measured on the validation "
             f"data through each deployed artifact ({s['selected_on']}). Scored with {s['score_steps']} recovery "
             f"steps; survivors recovered fully: {', '.join(s['survivors']) or 'none'}"
             f"{'; not reached in time: ' + ', '.join(s['survivors_not_recovered']) if s.get('survivors_not_recovered') else ''}"
             f". Search wall time "
             f"{s['wall_s']:.0f} s (budget {s['search_minutes']:g} min).", "",
             f"Chosen: **{ratio_label(s['chosen'])} on {s['chosen']['target']} {s['chosen']['deployed']}**: {s['why']}.",
             "", "| ratio | runtime | precision | metric | drop | fits | p50 ms | vs dense ORT FP32 | vs dense same precision | "
             "recovery | wall s | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(s["candidates"], key=lambda c: (c["p50_ms"] is None, c["p50_ms"] or 0)):
        metric = f"{c['metric']:.4g}" if c["metric"] is not None else "-"
        drop = f"{c['drop']:.3g}" if c["drop"] is not None else "-"
        p50 = f"{c['p50_ms']:.3g}" if c["p50_ms"] is not None else "-"
        lines.append(f"| {ratio_label(c)} | {c['target']} | {c['deployed'] or c['precision']} | {metric} | {drop} | "
                     f"{'yes' if c['fits'] else 'no'} | {p50} | {_x(c['vs_dense_fp32'])} | {_x(c['vs_dense_same'])} | "
                     f"{c['recovery']} | {c['wall_s'] if c['wall_s'] is not None else '-'} | {c['status']} |")
    if s.get("plot"):
        lines += ["", s["plot"] if s["plot"] != PLOT else f"![frontier]({PLOT})"]
    return lines


def plot_frontier(record: dict, path: Path) -> str:
    """Speedup vs dense ORT FP32 against the metric's drop, one marker per runtime and precision, the floor as a
    vertical line, the chosen candidate circled."""
    plt = pyplot()
    if plt is None:
        return no_matplotlib(path.name)
    points = [c for c in record["candidates"] if c["drop"] is not None and c["vs_dense_fp32"] is not None]
    if not points:
        return "no candidate was timed: no plot"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in sorted({f"{c['target']} {c['deployed']}" for c in points}):
        group = [c for c in points if f"{c['target']} {c['deployed']}" == label]
        ax.scatter([c["drop"] for c in group], [c["vs_dense_fp32"] for c in group], label=label)
        for c in group:
            ax.annotate(ratio_label(c), (c["drop"], c["vs_dense_fp32"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.axvline(record["max_drop"], linestyle="--", color="gray", label=f"--max-drop {record['max_drop']:g}")
    chosen = record.get("chosen")
    if chosen and chosen.get("vs_dense_fp32") is not None:
        ax.scatter([chosen["drop"]], [chosen["vs_dense_fp32"]], s=200, facecolors="none", edgecolors="red",
                   label="chosen")
    ax.set(xlabel=f"{record['metric']} drop vs dense FP32 (validation)", ylabel="speedup vs dense ORT FP32",
           title="search frontier (labels: pruning ratio)")
    ax.legend(fontsize=7)
    save(plt, fig, path)
    return path.name
