"""The `p2d` command: a thin layer over the Python API. Each command is a module of cli/ whose `cmd_*` docstring is
its --help; its flags come from the settings table."""
from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
import warnings

from prune2deploy import __version__
from prune2deploy.errors import EXIT_INTERNAL, EXIT_USER, P2DError


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags come from the settings table (config/settings.py) through cli/flags.py."""
    from prune2deploy.cli.bench import cmd_bench
    from prune2deploy.cli.build import cmd_build
    from prune2deploy.cli.cache import cmd_cache
    from prune2deploy.cli.compile import cmd_compile
    from prune2deploy.cli.flags import add_flags
    from prune2deploy.cli.inspect import cmd_inspect
    from prune2deploy.cli.sensitivity import cmd_sensitivity
    from prune2deploy.cli.targets import cmd_targets
    from prune2deploy.cli.verify import cmd_verify

    import prune2deploy

    parser = _OneLineParser(prog="p2d", description=prune2deploy.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"p2d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, *positionals):
        doc = inspect.cleandoc(fn.__doc__)
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        for dest, kwargs in positionals:
            p.add_argument(dest, **kwargs)
        add_flags(p, name)
        p.set_defaults(fn=fn)
        return p

    out_dir = ("out_dir", {"metavar": "OUT_DIR", "help": "a directory written by p2d compile"})
    command("compile", cmd_compile)
    command("sensitivity", cmd_sensitivity)
    command("build", cmd_build, ("out_dir", {"metavar": "OUT_DIR",
                                             "help": "a directory prepared by p2d compile --target trt-*"}))
    command("verify", cmd_verify, out_dir)
    command("bench", cmd_bench, out_dir)
    command("cache", cmd_cache, ("action", {"choices": ("info", "clear"),
                                            "help": "info: entries and size; clear: delete p2d's entries"}))
    command("inspect", cmd_inspect)
    command("targets", cmd_targets)
    return parser


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("torch").setLevel(logging.ERROR)
    logging.disable(logging.WARNING)


class Stopped(KeyboardInterrupt):
    """SIGTERM (CI runners, `timeout`) and SIGHUP end a command as Ctrl-C does: work directories removed, the
    previous output untouched, one line, exit 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


class _OneLineParser(argparse.ArgumentParser):
    """A flag error is one line and exit 2, like every other user error (the usage is in --help)."""

    def error(self, message: str):
        self.exit(EXIT_USER, f"error: {message} (hint: {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if debug:
        logging.getLogger("prune2deploy").setLevel(logging.DEBUG)  # compilers' logs too (torch-cuda)
    else:
        _quiet_libraries()
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if args.command == "compile":
            from prune2deploy.config.recipe import load_recipe, merge

            args = merge(load_recipe(args.config) if args.config else None, args, parser, argv)
        return args.fn(args)
    except P2DError as exc:
        if debug:
            raise
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        from prune2deploy.artifacts.outdir import os_error_line

        line = None if debug else os_error_line(exc)
        if line is None:
            raise
        print(f"error: {line[1]} (hint: {line[2]})", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"error: {what}; the previous output directory is untouched", file=sys.stderr)
        return 128 + signum
    except Exception as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
