"""Docs match behaviour: the settings reference is generated from the table, every flag of every command and
every recipe key appears in docs/, the README stays the front door, and relative links resolve."""
from __future__ import annotations

import argparse
import re

from helpers import REPO

from prune2deploy.cli.app import build_parser
from prune2deploy.config import settings
from prune2deploy.config.recipe import SCHEMA

DOCS = sorted((REPO / "docs").glob("*.md"))


def _docs_text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_reference_table_is_generated_from_the_settings_table():
    page = (REPO / "docs" / "reference.md").read_text()
    assert settings.with_table(page) == page, \
        "docs/reference.md is stale: python -m prune2deploy.config.settings docs/reference.md"


def test_every_flag_of_every_command_is_documented():
    text = _docs_text()
    missing = []
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help") and not re.search(rf"`{re.escape(flag)}[` /=]", text):
                    missing.append(f"p2d {name} {flag}")
    for flag in ("--version", "--debug"):
        if flag not in text:
            missing.append(flag)
    assert not missing, f"flags no page of docs/ names: {missing}"


def test_every_recipe_key_is_documented():
    text = _docs_text()
    assert len(SCHEMA) == len(settings.RECIPE_KEYS) > 50
    assert not [k.path for k in SCHEMA if f"`{k.path}`" not in text]


def test_readme_is_the_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move reference to docs/, results to benchmarks/"
    readme = "\n".join(lines)
    for page in DOCS:
        assert f"docs/{page.name}" in readme, f"the README's docs index misses docs/{page.name}"


def test_relative_links_resolve():
    broken = []
    for page in [REPO / "README.md", REPO / "benchmarks" / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
