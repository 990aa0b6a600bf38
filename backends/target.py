"""A deployment target's registry row: what `p2d targets` lists and what the pipeline asks of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    round_to: int  # default channel alignment
    sparse_round_to: int  # alignment when a 2:4 pass follows (sparse kernels want K % 16 == 0)
    availability: Callable[[], tuple[bool, str]]
    driver: Callable[[], object]  # the pipeline's side of the target: build, verify, benchmark (lazy import)
