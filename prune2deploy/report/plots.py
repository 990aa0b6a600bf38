"""matplotlib, where the optional `[plot]` extra installed it: the report's PNGs are written through here."""
from __future__ import annotations

from pathlib import Path


def no_matplotlib(name: str) -> str:
    """The report's note in place of the PNG `name`."""
    return f"no {name}: matplotlib is not installed (pip install 'prune2deploy[plot]')"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(plt, fig, path: Path) -> None:
    """Write `fig` to `path` reproducibly (no software stamp) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
