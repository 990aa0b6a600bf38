"""The N:M pattern itself: parse "2:4", the mask that keeps the N largest of every M weights along the
reduction axis, and the checks that a weight holds it. Shared by the 2:4 pass, the permutation search, the
ONNX check and the torch-cuda layout."""
from __future__ import annotations


import torch



REDUCTION_AXIS = 1  # input channels in torch's layout: Conv [K, C, R, S], Linear [out, in]


def _groups_last(weight: torch.Tensor, m: int, axis: int) -> torch.Tensor:
    """View `weight` as [..., groups, m] with the groups taken along `axis`."""
    moved = weight.movedim(axis, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"reduction axis of size {moved.shape[-1]} is not a multiple of M={m}")
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def nm_mask(weight: torch.Tensor, n: int, m: int, axis: int = REDUCTION_AXIS) -> torch.Tensor:
    """Bool mask keeping the n largest |w| of every m consecutive weights along `axis`."""
    grouped = _groups_last(weight.detach().abs(), m, axis)
    keep = torch.zeros_like(grouped, dtype=torch.bool)
    keep.scatter_(-1, grouped.topk(n, dim=-1).indices, True)
    moved_shape = weight.movedim(axis, -1).shape
    return keep.reshape(moved_shape).movedim(-1, axis)


def holds_nm(weight: torch.Tensor, n: int, m: int, axis: int = REDUCTION_AXIS) -> bool:
    """True when every group of m consecutive weights along `axis` has at most n nonzeros."""
    if weight.shape[axis] % m:
        return False
    nonzeros = (_groups_last(weight.detach(), m, axis) != 0).sum(-1)
    return bool((nonzeros <= n).all())


def kept_fraction(weight: torch.Tensor, n: int, m: int, axis: int = REDUCTION_AXIS) -> float:
    """Fraction of sum(|w|) that the N:M mask keeps (1.0 for an all-zero weight)."""
    magnitude = weight.detach().abs().double()
    total = float(magnitude.sum())
    if total == 0.0:
        return 1.0
    return float((magnitude * nm_mask(weight, n, m, axis)).sum()) / total
