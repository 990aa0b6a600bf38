"""The `p2d` command line, a thin layer over the Python API: `app` parses and dispatches, one module per command."""
from prune2deploy.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
