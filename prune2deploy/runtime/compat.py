"""Optional model libraries, imported only where they work on this machine."""
from __future__ import annotations

import importlib

_tv_schemas = None


def import_torchvision():
    """Import torchvision, defining the two op schemas a CPU-only torch lacks; None if it won't import.

    torchvision wheels built for CUDA torch register `torchvision::nms`/`qnms` fake kernels at import,
    which fails on CPU torch unless the schemas exist. Its models work; its C++ ops (nms, roi_align) never do.
    """
    global _tv_schemas
    try:
        return importlib.import_module("torchvision")
    except ImportError:
        return None
    except Exception:
        pass
    import torch

    if _tv_schemas is None:
        try:
            _tv_schemas = torch.library.Library("torchvision", "DEF")
            _tv_schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _tv_schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except Exception:
            return None
    import sys

    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    try:
        return importlib.import_module("torchvision")
    except Exception:
        return None


def import_optional(name: str):
    """Import a library if installed and importable, else None."""
    if name == "torchvision":
        return import_torchvision()
    if name in ("timm", "transformers"):
        import_torchvision()  # both import torchvision when it is installed: its op schemas must exist first
    try:
        return importlib.import_module(name)
    except Exception:
        return None
