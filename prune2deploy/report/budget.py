"""Views of the budget search: report fields, terminal lines, Markdown, plots."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.report.plots import no_matplotlib, pyplot, save

ALLOCATION_PLOT = "allocation.png"


def add_budget(report: dict, prune_record: dict, work: Path) -> dict:
    """Move the pass's `budget` record to report["budget"]; write allocation.png. Returns {name: path} written."""
    budget = prune_record.pop("budget", None)
    if budget is None:
        return {}
    report["budget"] = budget
    budget["plot"] = plot_allocation(budget, work / ALLOCATION_PLOT)
    return {ALLOCATION_PLOT: work / ALLOCATION_PLOT} if budget["plot"] == ALLOCATION_PLOT else {}


def finish_budget(report: dict) -> None:
    """budget.achieved from the final benchmark (speedup, pruned p50) or the counted MACs; budget.met."""
    budget = report.get("budget")
    if not budget:
        return
    kind = budget["kind"]
    if kind == "macs_fraction":
        achieved = 1.0 / report["mac_reduction"] if report.get("mac_reduction") else None
    elif kind == "speedup":
        achieved = report.get("speedup")
    else:
        achieved = ((report["models"]["pruned"].get("latency_ms") or {}).get("p50")
                    if report.get("models") else None)
    budget["achieved"] = achieved
    if achieved is None:
        budget["met"] = None
    elif kind == "speedup":
        budget["met"] = achieved >= budget["requested"]
        budget["achieved_over_requested"] = achieved / budget["requested"]
    else:
        budget["met"] = achieved <= budget["requested"]
        budget["achieved_over_requested"] = achieved / budget["requested"]


def _fmt(kind: str, value) -> str:
    if value is None:
        return "not measured"
    return {"speedup": f"{value:.2f}x", "latency_ms": f"{value:.3g} ms", "macs_fraction": f"{value:.3f}"}[kind]


def budget_lines(report: dict) -> list[str]:
    b = report.get("budget")
    if not b:
        return []
    s = b["search"]
    met = {True: "met", False: "NOT met", None: "not benchmarked"}[b["met"]]
    return [f"budget {b['kind']} {_fmt(b['kind'], b['requested'])}: achieved {_fmt(b['kind'], b['achieved'])} "
            f"({met}); {len(b['steps'])} greedy steps, {s['candidates_scored']} candidates scored on {s.get('score', s['metric'])}, "
            f"{s['candidates_timed']} timed, search {s['wall_s']:.0f} s"]


def budget_markdown(report: dict) -> list[str]:
    b = report.get("budget")
    if not b:
        return []
    s = b["search"]
    lines = ["", f"## Budget: {b['kind']} {_fmt(b['kind'], b['requested'])}", "",
             f"Achieved {_fmt(b['kind'], b['achieved'])} "
             f"{'(MACs counted on the pruned model)' if b['kind'] == 'macs_fraction' else 'in the final benchmark'}"
             f"; the search measured "
             f"{b['search_measured']['fraction']:.3f} of the dense cost ({len(s['rounds'])} allocations measured "
             f"while landing, {'inside' if s.get('landed_in_band') else 'outside'} the accepted band "
             f"{_band(s)}). {len(b['steps'])} greedy steps "
             f"(slice {s['slice']:g} of dense), {s['candidates_scored']} candidates scored on "
             f"{s.get('score', s['metric'])} ({s['validation_samples']} validation samples, after BN re-estimation; "
             f"{s['metric']}: dense {s['dense_score']:.4g}, searched widths {s['final_score']:.4g} before recovery), "
             f"{s['candidates_timed']} timed"
             f"{' (cost table from the cache)' if s['table_cached'] else ''}, {s['wall_s']:.0f} s, "
             f"scored in {s['executor']}.", "",
             *_uniform_line(s.get("uniform_compared")), *_tie_break_line(b.get("tie_break")),
             "| group | kind | dense | kept | kept fraction |", "|---|---|---|---|---|"]
    lines += [f"| {g['name']} | {g['kind']} | {g['dense']} | {g['kept']} | {g['kept_fraction']:.2f} |"
              for g in b["per_group"]]
    if b.get("plot"):
        lines += ["", b["plot"] if b["plot"] != ALLOCATION_PLOT else f"![kept fraction per group]({ALLOCATION_PLOT})"]
    return lines


def _band(search: dict) -> str:
    low, high = search.get("band") or (None, None)
    return f"{low:g}-{high:g} of the requested speedup or reduction" if low else "(not recorded)"


def _uniform_line(u: dict | None) -> list[str]:
    """What the search's own scorer said about uniform pruning at the same estimated cost."""
    if not u or u.get("same"):
        return []
    if u["chosen"]:
        return [f"The greedy steps scored {u['greedy_score']:.4g}; uniform widths (landed by measurement like the "
                f"greedy ones) were kept instead.", ""]
    if u.get("kept_fraction") is None:
        return []
    if u["score"] > u["greedy_score"]:
        return [f"Uniform widths at the same estimated cost (kept fraction {u['kept_fraction']:.3f}) scored "
                f"{u['score']:.4g}, above the greedy {u['greedy_score']:.4g}; landed by measurement they scored "
                f"lower or missed the band, so the greedy widths were kept.", ""]
    return [f"Uniform widths at the same estimated cost (kept fraction {u['kept_fraction']:.3f}) scored "
            f"{u['score']:.4g}, below the searched {u['greedy_score']:.4g}.", ""]


def _tie_break_line(t: dict | None) -> list[str]:
    """The final tie-break: both allocations recovered alike, the better on validation kept."""
    if not t or t.get("kept") is None:
        return [f"No tie-break after recovery: {t['skipped']}.", ""] if t else []
    g, u = t["greedy"], t["uniform"]
    return [f"Tie-break ({t['settings']}: {g['steps']} and {u['steps']} recovery steps): {t['metric']} on validation "
            f"{g['val_metric']:.4g} for the greedy widths ({g['achieved_over_requested']:.3f} of the budget), "
            f"{u['val_metric']:.4g} for uniform widths ({u['achieved_over_requested']:.3f}); {t['kept']} kept.", ""]


def plot_allocation(budget: dict, path: Path) -> str:
    """allocation.png: a bar of kept fraction per group; the note to report when matplotlib is absent."""
    plt = pyplot()
    if plt is None:
        return no_matplotlib(ALLOCATION_PLOT)
    groups = budget["per_group"]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(groups) + 2), 4))
    ax.bar(range(len(groups)), [g["kept_fraction"] for g in groups],
           color=["tab:orange" if g["kind"] == "heads" else "tab:blue" for g in groups])
    ax.set_xticks(range(len(groups)), [g["name"] for g in groups], rotation=75, ha="right", fontsize=7)
    ax.set(ylabel="kept fraction", ylim=(0, 1.05), title=f"budget {budget['kind']} {budget['requested']:g}")
    save(plt, fig, path)
    return ALLOCATION_PLOT
