"""prune2deploy: prune a PyTorch model, export it, verify it, and measure what pruning bought."""
from __future__ import annotations

__version__ = "0.1.0"

from prune2deploy.errors import GateFailed, P2DError, UserError  # noqa: E402

__all__ = ["compile", "CompileResult", "Output", "P2DError", "UserError", "GateFailed", "__version__"]


def __getattr__(name):
    # The pipeline pulls in torch; keep `import prune2deploy` (and `p2d --help`) light.
    if name in ("compile", "CompileResult", "Output"):
        from prune2deploy import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
