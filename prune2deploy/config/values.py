"""The values settings take: choice lists and the parsers of compound values (N:M, image sizes, gates). The
stages import them from here, so the settings table never imports a stage."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from prune2deploy.errors import UserError, user_error

CRITERIA = ("l1", "l2", "bn-scale", "taylor", "hessian", "random")
PRUNING_MODES = ("auto", "global", "block-local")
RECOVERY_METHODS = ("kd", "finetune", "none")
EXPORTERS = ("auto", "torchscript", "dynamo")
DTYPES = ("fp16", "bf16")
METRICS = ("top1", "cosine")  # or module:callable
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def parse_pattern(text: str) -> tuple[int, int]:
    """Parse "N:M" into (N, M); N and M positive ints with N < M."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"bad sparsity pattern {text!r}", hint='write it as N:M, e.g. "2:4"')
    n, m = int(match.group(1)), int(match.group(2))
    if n <= 0 or m <= 0 or n >= m:
        raise UserError(f"bad sparsity pattern {text!r}: need 0 < N < M", hint='e.g. "2:4"')
    return n, m


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '224,320' -> (224, 320) as (height, width)."""
    try:
        dims = [int(d) for d in str(text).replace("x", ",").split(",") if d.strip()]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or any(d <= 0 for d in dims):
        raise user_error(f"bad image size {text!r}", "write 224 or H,W such as 224,320")
    return (dims[0], dims[-1])


def parse_channels(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise user_error(f"bad {name} {text!r}", "one number per channel, e.g. 0.485,0.456,0.406")
    return values


OPERATORS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}


_GATE_RE = re.compile(r"^\s*(?P<field>[A-Za-z_][\w.\-]*)\s*(?P<op>[<>=!]+)\s*(?P<threshold>\S.*?)\s*$")


_SYNTAX_HINT = "write FIELD OP NUMBER, e.g. speedup>=2.5 or models.pruned.latency_ms.p99<=20"


@dataclass(frozen=True)
class Gate:
    expr: str
    field: str
    op: str
    threshold: float


def parse_gate(text: str) -> Gate:
    """Parse 'FIELD OP NUMBER'; UserError on bad syntax, an unknown operator or a non-numeric threshold."""
    match = _GATE_RE.match(str(text))
    if not match:
        raise user_error(f"bad gate {text!r}", _SYNTAX_HINT)
    field, op, threshold = match.group("field", "op", "threshold")
    if op not in OPERATORS:
        raise user_error(f"bad gate {text!r}: unknown operator {op!r}", f"use one of {' '.join(OPERATORS)}")
    try:
        number = float(threshold)
    except ValueError:
        raise user_error(f"bad gate {text!r}: threshold {threshold!r} is not a number", _SYNTAX_HINT) from None
    if math.isnan(number):
        raise user_error(f"bad gate {text!r}: threshold is NaN", _SYNTAX_HINT)
    return Gate(f"{field}{op}{threshold}", field, op, number)
