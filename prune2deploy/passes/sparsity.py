"""N:M structured sparsity (2:4 for sparse tensor cores) on Conv2d / Linear weights.

Each group of M consecutive weights along the reduction (input-channel) axis keeps its
N largest magnitudes; the rest are zeroed in place, so weights stay dense tensors and
TensorRT can pick its sparse kernels at build time.
"""
from __future__ import annotations

import fnmatch
from typing import Any

import torch
import torch.nn as nn

from prune2deploy.errors import P2DError, UserError
from prune2deploy.passes.nm import holds_nm, kept_fraction, nm_mask

# What the sparse tensor-core kernels need for a layer to run sparse.
IN_CHANNEL_MULTIPLE = 16
OUT_CHANNEL_MULTIPLE = 8


def ineligibility(module: nn.Module, m: int) -> str | None:
    """Why the sparse kernels cannot run this layer, or None when they can."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped/depthwise conv (groups={module.groups})"
        c_in, c_out = module.in_channels, module.out_channels
    elif isinstance(module, nn.Linear):
        c_in, c_out = module.in_features, module.out_features
    else:
        return f"{type(module).__name__} is not Conv2d/Linear"
    if c_in % IN_CHANNEL_MULTIPLE or c_in % m:
        return f"input channels {c_in} not a multiple of {max(IN_CHANNEL_MULTIPLE, m)}"
    if c_out % OUT_CHANNEL_MULTIPLE:
        return f"output channels {c_out} not a multiple of {OUT_CHANNEL_MULTIPLE}"
    return None


def _is_skipped(name: str, patterns) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


class SparsityPass:
    """Mask eligible Conv2d/Linear weights to N:M along input channels (optionally permuted first)."""

    name = "sparsity"

    def __init__(self, n: int = 2, m: int = 4, permute: bool = False, skip: list[str] = (),
                 permute_time_s: float = 2.0):
        if not (0 < n < m):
            raise UserError(f"bad sparsity pattern {n}:{m}: need 0 < N < M", hint='e.g. "2:4"')
        self.n, self.m = n, m
        self.permute = permute
        self.skip = list(skip)
        self.permute_time_s = permute_time_s  # search budget per channel group
        self.claimed: list[str] = []

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"

    def select(self, model: nn.Module) -> tuple[list[str], list[dict]]:
        """Names of the layers to sparsify, and the skipped ones with their reason."""
        chosen, skipped = [], []
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            reason = "skipped by user" if _is_skipped(name, self.skip) else ineligibility(module, self.m)
            if reason:
                skipped.append({"name": name, "reason": reason})
            else:
                chosen.append(name)
        return chosen, skipped

    def run(self, model: nn.Module, ctx: Any) -> dict:
        chosen, skipped = self.select(model)
        permuted: dict[str, dict] = {}
        if self.permute and chosen:
            from prune2deploy.passes.permute import permute_for_sparsity

            permuted = permute_for_sparsity(model, ctx.example_inputs, self.n, self.m, chosen,
                                            time_budget_s=self.permute_time_s)
        modules = dict(model.named_modules())
        layers = []
        for name in chosen:
            weight = modules[name].weight
            entry = {"name": name, "shape": list(weight.shape),
                     "axis": "C" if isinstance(modules[name], nn.Conv2d) else "in",
                     "kept_magnitude": round(kept_fraction(weight, self.n, self.m), 6)}
            if self.permute:
                info = permuted.get(name, {})
                entry["kept_magnitude_unpermuted"] = round(info.get("kept_unpermuted", entry["kept_magnitude"]), 6)
                if not info.get("permuted"):
                    entry["permute_skipped"] = info.get("reason", "no producing layer found")
            entry["permuted"] = bool(permuted.get(name, {}).get("permuted", False))
            with torch.no_grad():
                weight.mul_(nm_mask(weight, self.n, self.m).to(weight.dtype))
            layers.append(entry)
        self.claimed = chosen
        return {"pattern": self.pattern, "layers": layers, "skipped": skipped}

    def ensure(self, model: nn.Module, ctx: Any) -> None:
        record = (getattr(ctx, "records", None) or {}).get(self.name)
        names = [layer["name"] for layer in record["layers"]] if record else self.claimed
        modules = dict(model.named_modules())
        for name in names:
            module = modules.get(name)
            if module is None:
                raise P2DError(f"sparsity: layer {name!r} claimed {self.pattern} is gone from the model")
            if not holds_nm(module.weight, self.n, self.m):
                raise P2DError(f"sparsity: layer {name!r} no longer holds {self.pattern} along its input channels",
                               hint="a later pass rewrote its weight; run sparsity last or re-mask")
