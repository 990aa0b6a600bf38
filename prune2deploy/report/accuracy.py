"""report.md and terminal section: the validation metric of the dense and pruned models at each stage."""
from __future__ import annotations


STAGES = [("dense", "dense"), ("after_prune", "after prune"), ("after_bn_recalibration", "after BN re-estimation"),
          ("pruned", "pruned (exported)"), ("pruned_2to4", "pruned+2:4"), ("dense_deployed", "dense (deployed precision)"),
          ("pruned_deployed", "pruned (deployed precision)")]


def _fmt(acc: dict, value: float) -> str:
    return f"{value:.2f}%" if acc["unit"] == "%" else f"{value:.4f}"


def accuracy_lines(report: dict) -> list[str]:
    """One line for the terminal and report.md; a note when no data was given."""
    acc = report.get("accuracy")
    if not acc:
        return ["accuracy not measured: no real samples were given (the fidelity line compares outputs on random "
                "inputs only); to measure it and recover what pruning cost: --data train.pt --val-data val.pt"]
    shown = ", ".join(f"{label} {_fmt(acc, acc[key])}" for key, label in STAGES if acc.get(key) is not None)
    drop = f"{acc['drop']:.2f} points" if acc["unit"] == "%" else f"{acc['drop']:.4f}"
    return [f"accuracy ({acc['metric']} on {acc['samples']} validation samples): {shown}; drop {drop}"] + test_lines(acc)


def test_lines(acc: dict) -> list[str]:
    t = acc.get("test")
    if not t:
        return []
    shipped = t.get("pruned_deployed", t.get("pruned"))
    drop = f"{t['drop']:.2f} points" if acc["unit"] == "%" else f"{t['drop']:.4f}"
    return [f"test ({acc['metric']} on {t['samples']} samples of {t['source']}, reported only, never chosen on): "
            f"dense {_fmt(acc, t['dense'])}, shipped {_fmt(acc, shipped)}; drop {drop}"]


def accuracy_markdown(report: dict) -> list[str]:
    """report.md's accuracy section: the metric at each stage, on which data."""
    acc = report.get("accuracy")
    if not acc:
        return []
    d = acc.get("data") or {}
    source = d.get("val_data") or (f"{d['val_split']:g} of {d['data']} held out (seed {d['seed']})"
                                  if d.get("val_split") else d.get("data"))
    lines = ["", f"## Accuracy: {acc['metric']}", "",
             f"{acc['samples']} validation samples from {source}" +
             (f"; {d['train_samples']} training samples" if d.get("train_samples") else ""), "",
             f"| model | {acc['metric']} |", "|---|---|"]
    lines += [f"| {label} | {_fmt(acc, acc[key])} |" for key, label in STAGES if acc.get(key) is not None]
    drop = f"{acc['drop']:.2f} points" if acc["unit"] == "%" else f"{acc['drop']:.4f}"
    return lines + ["", f"Drop (dense - pruned): {drop}."] + [f"\n{line[0].upper()}{line[1:]}." for line in test_lines(acc)]
