"""`p2d compile --config p2d.toml`: every compile setting in one validated TOML file; typed flags override it.

Every key is optional; each stands for the flag of the same setting (config/settings.py, one row each; the
table of keys and flags is docs/reference.md, an example recipe examples/p2d.toml).

Errors (UserError, exit 2) name the key and its place, `p2d.toml:LINE:COL`: TOML syntax, unknown keys (with a
did-you-mean hint), wrong types, out-of-range values. Value checks reuse CompileOptions.validate() on the one
key, so the recipe and the flags accept exactly the same values.

Precedence, decided in `merge` only: a flag typed on the command line > the recipe > the flag's default.
"Typed" is found by parsing argv again with every default replaced by a sentinel (`explicit_flags`), so
`--ratio 0.5` typed on purpose beats `ratio = 0.3` even though 0.5 is also the default. Lists (trust, targets,
ignore, inputs.named, gates.checks) are replaced, not extended; typing any input flag replaces all of
[inputs]. Relative paths are taken from the working directory, as for flags.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prune2deploy.config.settings import RECIPE_KEYS
from prune2deploy.errors import UserError, user_error


@dataclass(frozen=True)
class Key:
    """One recipe key: its TOML type, the argparse dest of its flag and the CompileOptions field it fills."""

    path: str  # dotted: "prune.ratio"
    kind: str  # str | bool | int | float | list
    dest: str
    option: str | None = None
    negated: bool = False  # the flag says the opposite: slim = true <-> no --no-slim
    check: Callable[[Any], str | None] | None = None  # extra range check: a message when out of range


SCHEMA: tuple[Key, ...] = tuple(
    Key(s.key, s.kind, s.arg_dest, s.name if s.option else None, s.negated, s.check) for s in RECIPE_KEYS)
KEYS = {k.path: k for k in SCHEMA}
TABLES = sorted({k.path.split(".")[0] for k in SCHEMA if "." in k.path})
INPUT_DESTS = {"input_shape", "input", "example_inputs"}
_TOML_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}
_KIND_NAMES = {"str": "a string", "bool": "a boolean", "int": "an integer", "float": "a number",
               "list": "an array of strings"}


@dataclass
class CISettings:
    junit: str | None = None
    step_summary: bool = True


@dataclass
class Limits:
    stage_timeout_s: float | None = None
    max_memory_gb: float | None = None


@dataclass
class Recipe:
    """A loaded, validated recipe. `values` holds the keys as written (dotted path -> value); the rest derive."""

    path: str
    values: dict[str, Any]
    raw: dict  # the parsed TOML, for the manifest

    @property
    def options(self) -> dict[str, Any]:
        """CompileOptions fields the recipe sets (target excluded: see `targets`)."""
        return {KEYS[p].option: v for p, v in self.values.items() if KEYS[p].option}

    @property
    def model(self) -> str | None:
        return self.values.get("model")

    @property
    def inputs(self) -> dict[str, Any]:
        """{"shape": ...} or {"named": [...]} or {"file": ...}; {} when the recipe gives no inputs."""
        return {p.split(".")[1]: v for p, v in self.values.items() if p.startswith("inputs.")}

    @property
    def targets(self) -> list[str]:
        return list(self.values.get("targets", []))

    @property
    def gates(self) -> list[str]:
        return list(self.values.get("gates.checks", []))

    @property
    def ci(self) -> CISettings:
        return CISettings(self.values.get("ci.junit"), self.values.get("ci.step_summary", True))

    @property
    def limits(self) -> Limits:
        return Limits(self.values.get("limits.stage_timeout_s"), self.values.get("limits.max_memory_gb"))

    def dest_values(self) -> dict[str, Any]:
        """The recipe as argparse dests, the form `merge` lays over the parsed flags."""
        return {KEYS[p].dest: (not v if KEYS[p].negated else v) for p, v in self.values.items()}


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; UserError with `FILE:LINE:COL` for anything wrong in it."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise user_error(f"config file not found: {name}", "e.g. --config examples/p2d.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise user_error(f"cannot read config file {name}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(name, text, exc) from None
    where = _Locator(name, text)
    values = _flatten(raw, where)
    for key, value in values.items():
        values[key] = _check_value(KEYS[key], value, where)
    _check_together(values, where)
    return Recipe(name, values, raw)


def _syntax_error(name: str, text: str, exc: tomllib.TOMLDecodeError) -> UserError:
    """tomllib ends its message with '(at line L, column C)': move that to the front as FILE:L:C."""
    message = str(exc)
    if match := re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message):
        line, col = match.groups()
    else:  # "(at end of document)": the end of the last line
        match = re.search(r"\s*\(at end of document\)\s*$", message)
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    if match:
        message = message[:match.start()]
    return user_error(f"{name}:{line}:{col}: invalid TOML: {message}")


class _Locator:
    """Finds the line and column of a dotted key by scanning the text (tomllib keeps no positions)."""

    _TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    _BARE_OR_QUOTED = r"(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')"
    _KEY = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
    _INLINE_KEY = re.compile(rf"({_BARE_OR_QUOTED})\s*=")

    def __init__(self, name: str, text: str):
        self.name = name
        self.lines = text.splitlines()
        self.positions: dict[str, tuple[int, int]] = {}
        table: tuple[str, ...] = ()
        depth = 0  # open brackets of a multi-line array: its lines are values, not keys
        for lineno, line in enumerate(self.lines, 1):
            if depth == 0 and (m := self._TABLE.match(line)):
                table = _split_key(m.group(1))
                self.positions.setdefault(".".join(table), (lineno, line.index("[") + 1))
            elif depth == 0 and (m := self._KEY.match(line)):
                key = table + _split_key(m.group(1))
                self.positions.setdefault(".".join(key), (lineno, m.start(1) + 1))
                rest = line[m.end():]
                if rest.lstrip().startswith("{"):  # inline table: inputs = { shape = "..." }
                    for im in self._INLINE_KEY.finditer(rest):
                        sub = ".".join(key + _split_key(im.group(1)))
                        self.positions.setdefault(sub, (lineno, m.end() + im.start(1) + 1))
                depth += _bracket_balance(rest)
            elif depth:
                depth = max(0, depth + _bracket_balance(line))

    def __call__(self, key: str, element: str | None = None) -> str:
        """'FILE:LINE:COL' of `key` (or of the string `element` in its array); falls back to its table, line 1."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.positions:
                line, col = self.positions[".".join(parts[:n])]
                break
        else:
            line, col = 1, 1
        if element is not None:
            for lineno in range(line, len(self.lines) + 1):
                for quoted in (f'"{element}"', f"'{element}'"):
                    if quoted in self.lines[lineno - 1]:
                        return f"{self.name}:{lineno}:{self.lines[lineno - 1].index(quoted) + 1}"
        return f"{self.name}:{line}:{col}"


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([^.\s]+)", text)
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)


def _bracket_balance(text: str) -> int:
    """Net '[' minus ']' outside strings and comments."""
    balance, quote = 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            balance += 1
        elif ch == "]":
            balance -= 1
    return balance


def _flatten(raw: dict, where: _Locator) -> dict[str, Any]:
    """{dotted key: value} for every known key; UserError on an unknown key or a table that is not a table."""
    values = {}
    for top, value in raw.items():
        if top in TABLES:
            if not isinstance(value, dict):
                raise user_error(f"{where(top)}: {top} must be a table ([{top}]), got {_toml_type(value)}")
            for key, sub in value.items():
                path = f"{top}.{key}"
                if path not in KEYS:
                    raise _unknown_key(path, where)
                values[path] = sub
        elif top in KEYS:
            values[top] = value
        else:
            raise _unknown_key(top, where)
    return values


def _unknown_key(path: str, where: _Locator) -> UserError:
    table, _, key = path.rpartition(".")
    here = [k.path.rpartition(".")[2] for k in SCHEMA if k.path.rpartition(".")[0] == table]
    if not table:
        here += TABLES
    elsewhere = [k.path for k in SCHEMA if k.path.rpartition(".")[2] == key and k.path != path]
    if elsewhere:
        hint = f"{key} belongs in [{elsewhere[0].rpartition('.')[0]}]" if "." in elsewhere[0] \
            else f"{key} is a top-level key (put it before the first [table])"
    elif close := difflib.get_close_matches(key, here, n=1, cutoff=0.6):
        hint = f"did you mean {close[0]!r}?"
    else:
        hint = f"known keys{f' in [{table}]' if table else ''}: {', '.join(here)}"
    place = f" in [{table}]" if table else ""
    return user_error(f"{where(path)}: unknown key {key!r}{place}", hint)


def _check_value(key: Key, value: Any, where: _Locator) -> Any:
    """Type, then range (the key's own check, else CompileOptions.validate() on this key alone)."""
    ok = {"str": isinstance(value, str), "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "list": isinstance(value, list) and all(isinstance(v, str) for v in value)}[key.kind]
    if not ok:
        got = _toml_type(value)
        if isinstance(value, list):
            bad = next(v for v in value if not isinstance(v, str))
            got = f"an array holding {_toml_type(bad)} {bad!r}"
        raise user_error(f"{where(key.path)}: {key.path} must be {_KIND_NAMES[key.kind]}, got {got}")
    if key.kind == "float":
        value = float(value)
    problem = key.check(value) if key.check else None
    if problem:
        raise user_error(f"{where(key.path)}: {key.path} = {value!r} {problem}")
    if key.option and key.option != "permute":  # permute is checked with its pattern, in _check_together
        _validate_option(key, {key.option: value}, where)
    return value


def _validate_option(key: Key, fields: dict, where: _Locator, element: str | None = None) -> None:
    from prune2deploy.config.options import CompileOptions

    try:
        CompileOptions(**fields).validate()
    except UserError as exc:
        shown = element if element is not None else fields[key.option]
        raise user_error(f"{where(key.path, element)}: {key.path} = {shown!r}: {exc.message}", exc.hint) from None


def _check_together(values: dict[str, Any], where: _Locator) -> None:
    """Rules that span keys: one input form, permute needs a pattern, valid targets and gates."""
    given = [p for p in values if p.startswith("inputs.")]
    if len(given) > 1:
        raise user_error(f"{where(given[1])}: [inputs] takes one of shape, named, file; got {', '.join(given)}")
    budgets = [p for p in ("budget.target_speedup", "budget.latency_ms", "budget.macs_fraction") if p in values]
    if len(budgets) > 1 or (budgets and {"prune.ratio", "prune.head_ratio"} & set(values)):
        other = budgets[1] if len(budgets) > 1 else next(p for p in ("prune.ratio", "prune.head_ratio") if p in values)
        raise user_error(f"{where(other)}: {budgets[0]} and {other} both set the widths", "keep one of them")
    if values.get("sparsity.permute") and not values.get("sparsity.pattern"):
        raise user_error(f"{where('sparsity.permute')}: sparsity.permute = true needs sparsity.pattern",
                         'e.g. pattern = "2:4"')
    if "targets" in values:
        if not values["targets"]:
            raise user_error(f"{where('targets')}: targets is empty", 'e.g. targets = ["ort-cpu"]')
        for target in values["targets"]:
            _validate_option(KEYS["targets"], {"target": target}, where, element=target)
    from prune2deploy.config.values import parse_gate

    for text in values.get("gates.checks", []):
        try:
            parse_gate(text)
        except UserError as exc:
            raise user_error(f"{where('gates.checks', text)}: {exc.message}", exc.hint) from None


def _toml_type(value: Any) -> str:
    return next((name for t, name in _TOML_TYPES.items() if isinstance(value, t)), type(value).__name__)


# ---- flags over the recipe -------------------------------------------------------------------------------

_UNSET = object()
_ACCUMULATING = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction,
                 argparse._ExtendAction)  # they build on their default, so it must stay None


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests the user typed in argv: parse again with a copy whose defaults are all a sentinel."""
    probe = copy.deepcopy(parser)
    dests = set()
    for p in _all_parsers(probe):
        for action in p._actions:
            if action.dest == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            dests.add(action.dest)
            if action.default is not argparse.SUPPRESS:
                action.default = None if isinstance(action, _ACCUMULATING) else _UNSET
    parsed = vars(probe.parse_args(argv))
    return {d for d in dests if d in parsed and parsed[d] is not _UNSET and parsed[d] is not None}


def _all_parsers(parser: argparse.ArgumentParser):
    seen, todo = set(), [parser]
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())


def merge(recipe: Recipe | None, args: argparse.Namespace, parser: argparse.ArgumentParser,
          argv: list[str] | None = None) -> argparse.Namespace:
    """A copy of args where every dest the user did not type takes the recipe's value.

    Every schema dest is set on the result, also those with no flag yet (None, or False for switches).
    Adds `targets` (list; `target` becomes its first), `sources` (dest -> "flag" | "recipe" | "default")
    and `recipe_path`. argv defaults to sys.argv[1:] and must be what `args` was parsed from.
    """
    typed = explicit_flags(parser, sys.argv[1:] if argv is None else argv)
    from_recipe = recipe.dest_values() if recipe else {}
    if typed & INPUT_DESTS:
        from_recipe = {d: v for d, v in from_recipe.items() if d not in INPUT_DESTS}
    resolved = argparse.Namespace(**vars(args))
    sources = {}
    for key in SCHEMA:
        if key.dest in typed:
            sources[key.dest] = "flag"
        elif key.dest in from_recipe:
            setattr(resolved, key.dest, copy.copy(from_recipe[key.dest]))
            sources[key.dest] = "recipe"
        else:
            if not hasattr(resolved, key.dest):
                setattr(resolved, key.dest, False if key.kind == "bool" else None)
            sources[key.dest] = "default"
    from prune2deploy.config.options import CompileOptions

    target = resolved.target
    resolved.targets = [target] if isinstance(target, str) else list(target or []) or [CompileOptions.target]
    resolved.target = resolved.targets[0]
    resolved.sources = sources
    resolved.recipe_path = recipe.path if recipe else None
    if not resolved.model:
        raise user_error("no model given", "pass MODEL, or set model = \"...\" in the --config recipe")
    return resolved


def compile_options(resolved: argparse.Namespace, target: str | None = None):
    """CompileOptions for one target from merged args (dests the schema maps; unset ones keep their defaults)."""
    from prune2deploy.config.options import CompileOptions

    fields = {}
    for key in SCHEMA:
        value = getattr(resolved, key.dest, None)
        if key.option and value is not None:
            fields[key.option] = (not value) if key.negated else value
    fields["ignore"] = list(fields.get("ignore") or [])
    fields["kd_features"] = list(fields.get("kd_features") or [])
    return CompileOptions(**{**fields, "target": target or resolved.target})


def resolved_recipe(resolved: argparse.Namespace) -> dict[str, Any]:
    """The effective settings (flags over recipe) in recipe form, for the manifest: rerunnable as a recipe."""
    out: dict[str, Any] = {}
    for key in SCHEMA:
        value = resolved.targets if key.path == "targets" else getattr(resolved, key.dest, None)
        if value is None or (key.kind == "list" and not value):
            continue
        value = (not value) if key.negated else value
        table, _, name = key.path.rpartition(".")
        (out.setdefault(table, {}) if table else out)[name] = value
    return out
