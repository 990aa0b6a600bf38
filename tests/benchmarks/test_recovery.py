"""benchmarks/recovery.py's own logic: --minilm-set parsing, nearest-neighbour agreement, the MiniLM table."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "recovery.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_recovery", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_option_setting_parses_json_values_and_keeps_strings(bench):
    assert bench.option_setting("lr=1e-3") == ("lr", 0.001)
    assert bench.option_setting("recover_minutes=null") == ("recover_minutes", None)
    assert bench.option_setting("iterative_steps=2") == ("iterative_steps", 2)
    assert bench.option_setting("criterion=taylor") == ("criterion", "taylor")


@pytest.mark.parametrize("text", ["no_such_field=1", "lr", "=1"])
def test_option_setting_refuses_unknown_fields(bench, text):
    with pytest.raises(argparse.ArgumentTypeError, match="CompileOptions field"):
        bench.option_setting(text)


def _at_degrees(*angles: float) -> torch.Tensor:
    radians = torch.deg2rad(torch.tensor(angles))
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_neighbour_agreement_counts_same_nearest_neighbours(bench):
    dense = _at_degrees(0, 10, 90, 100)  # nearest: 0<->1, 2<->3
    assert bench.neighbour_agreement(dense, dense) == 1.0
    # sentence 1 moves to 70 degrees: its nearest becomes 2; 0 still picks 1, 2 and 3 still pick each other
    assert bench.neighbour_agreement(dense, _at_degrees(0, 70, 90, 100)) == pytest.approx(0.75)
    assert bench.neighbour_agreement(dense, _at_degrees(0, 100, 90, 10)) == pytest.approx(0.0)


def _minilm_result(with_test: bool) -> dict:
    kd = {"cosine": 0.8967, "nn_agreement": 0.565, "mac_reduction": 2.0, "speedup": 1.7, "after_prune": 0.75,
          "recovery": {"steps": 300, "wall_s": 212.0, "curve": [{"step": 300, "epoch": 0.44, "loss": 0.23,
                                                                  "metric": 0.8967}]}}
    if with_test:
        kd.update(test_cosine=0.8886, test_nn_agreement=0.655)
    return {"when": "now", "machine": "test", "minilm": {"sentences_train": 10, "sentences_val": 4,
                                                         "sentences_test": 3 if with_test else None,
                                                         "source": "s", "options": {"lr": 1e-3}, "kd": kd}}


def test_markdown_shows_validation_and_test_side_by_side(bench):
    text = bench.markdown(_minilm_result(with_test=True))
    assert "| kd | 0.8967 / 0.8886 | 56.5% / 65.5% | 2.00x |" in text
    assert "{'lr': 0.001}" in text
    assert "| 300 | 0.44 | 0.2300 | 0.8967 |" in text


def test_markdown_marks_a_missing_test_set(bench):
    assert "| kd | 0.8967 / - | 56.5% / - |" in bench.markdown(_minilm_result(with_test=False))


def test_wordnet_reader_keeps_definitions_and_examples(bench, tmp_path):
    """The data.* line format of WordNet 3.0 (wndb(5WN)): licence header lines start with two spaces."""
    from real_data import wordnet_sentences

    root = tmp_path / "usr/share/wordnet"
    root.mkdir(parents=True)
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    line = ("00217593 04 n 01 kill 1 002 @ 00217014 n 0000 | the destruction of an enemy plane or ship; "
            '"the pilot reported two kills during the mission"; "two kills"  \n')
    (root / "data.noun").write_text(header + line + line)
    for part in ("adj", "adv", "verb"):
        (root / f"data.{part}").write_text(header)
    assert wordnet_sentences(tmp_path) == ["the destruction of an enemy plane or ship",
                                           "the pilot reported two kills during the mission"]
    with pytest.raises(SystemExit, match="apt-get download wordnet-base"):
        wordnet_sentences(tmp_path / "missing")
