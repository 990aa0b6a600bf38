"""Each command's flags, generated from the settings table (config/settings.py): help, defaults and types are
written there once."""
from __future__ import annotations

import argparse

from prune2deploy.config.settings import BY_NAME, SETTINGS, Setting, for_command

_TYPES = {"str": None, "int": int, "float": float}


def _help(s: Setting) -> str:
    shown = s.default not in (None, [], False, True) and "default" not in s.help
    return s.help + (f"; default {s.default:g}" if shown and isinstance(s.default, float) else
                     f"; default {s.default}" if shown else "")


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Every flag of `command`, in the table's order."""
    for s in for_command(command):
        flag = s.cli_flag
        if flag == "MODEL":
            parser.add_argument(s.arg_dest, metavar="MODEL", nargs="?", help=s.help)
        elif s.off_flag:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(flag, dest=s.arg_dest, action="store_true", help=s.help.split(" (")[0])
            group.add_argument(s.off_flag, dest=s.arg_dest, action="store_false",
                               help=s.help.split(": ", 1)[-1].rstrip(")") + " (default)")
        elif s.kind == "bool":
            parser.add_argument(flag, dest=s.arg_dest, action="store_true", help=s.help)
        elif s.kind == "list":
            parser.add_argument(flag, dest=s.arg_dest, action="append", metavar=s.metavar, help=s.help)
        else:
            parser.add_argument(flag, dest=s.arg_dest, type=s.parse or _TYPES[s.kind], default=s.default,
                                metavar=s.metavar, help=_help(s), required=command in s.required_by)


def input_paths(args) -> dict:
    """label -> path of every input path the command line or recipe gave: --out, --junit and
    $GITHUB_STEP_SUMMARY may never be or contain them (settings with reads_path)."""
    return {(s.cli_flag or s.name): getattr(args, s.arg_dest) for s in SETTINGS
            if s.reads_path and getattr(args, s.arg_dest, None)}


def options_from_args(args, command: str, **fixed):
    """CompileOptions from a parsed command line: every option the command has a flag for, the rest default."""
    from prune2deploy.config.options import CompileOptions

    fields = {}
    for s in for_command(command):
        value = getattr(args, s.arg_dest, None)
        if s.option and value is not None:
            fields[s.name] = (not value) if s.negated else value
    for name in ("ignore", "kd_features"):
        if name in fields or BY_NAME[name] in for_command(command):
            fields[name] = list(fields.get(name) or [])
    return CompileOptions(**{**fields, **fixed})
