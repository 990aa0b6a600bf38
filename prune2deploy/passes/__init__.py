"""Model passes: each one is `requires -> run -> ensure` on an nn.Module.

A pass mutates the model in place, returns a JSON-able record for the report, and
`ensure` raises when the invariant it promises does not hold afterwards.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch.nn as nn


class Pass(Protocol):
    name: str

    def run(self, model: nn.Module, ctx: "Any") -> dict: ...

    def ensure(self, model: nn.Module, ctx: "Any") -> None: ...
