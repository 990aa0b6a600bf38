"""Models torch-pruning cannot fully follow: recurrent layers, tied weights. The pruning pass never crashes on
them: what cannot be pruned is rolled back with its reason, or the compile is refused in one line naming it."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from helpers import assert_user_error

MODELS = textwrap.dedent('''
    import torch, torch.nn as nn

    class Lstm(nn.Module):
        def __init__(self, rnn=nn.LSTM):
            super().__init__()
            self.emb = nn.Linear(16, 64); self.rnn = rnn(64, 64, batch_first=True); self.fc = nn.Linear(64, 4)
        def forward(self, x):
            y, _ = self.rnn(self.emb(x)); return self.fc(y[:, -1])

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a0 = nn.Linear(32, 64); self.a = nn.Linear(64, 64); self.b = nn.Linear(64, 64)
            self.b.weight = self.a.weight
            self.c = nn.Linear(64, 64); self.h = nn.Linear(64, 4)
        def forward(self, x):
            x = torch.relu(self.a0(x)); x = torch.relu(self.b(torch.relu(self.a(x))))
            return self.h(torch.relu(self.c(x)))

    def lstm(): return Lstm()
    def gru(): return Lstm(nn.GRU)
    def tied(): return Tied()
''')


def _models(tmp_path):
    path = tmp_path / "rnn_models.py"
    path.write_text(MODELS)
    return path


@pytest.mark.slow
def test_lstm_rollback_reports_the_layer_instead_of_crashing(p2d_in_process, tmp_path):
    r = p2d_in_process("compile", f"{_models(tmp_path)}:lstm", "--input-shape", "1,8,16", "--out", "out",
                       "--no-benchmark")
    assert r.code == 0, r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["group"] for s in report["skipped"]] == ["rnn"]
    assert {layer["name"]: layer["out_after"] for layer in report["layers"]}["emb"] < 64  # what could be, was


def test_gru_is_refused_in_one_line_naming_the_layer(p2d, tmp_path):
    r = p2d("compile", f"{_models(tmp_path)}:gru", "--input-shape", "1,8,16", "--out", "out")
    assert_user_error(r, "nothing could be pruned", "rnn (GRU)")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tied_weights_stay_tied_and_the_rest_is_pruned(p2d_in_process, tmp_path):
    r = p2d_in_process("compile", f"{_models(tmp_path)}:tied", "--input-shape", "1,32", "--out", "out",
                       "--no-benchmark")
    assert r.code == 0, r.stderr
    assert "untie" in r.stderr  # the groups left unpruned are warned about
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        pruned = torch.load(tmp_path / "out" / "pruned.pt", weights_only=False)
    finally:
        sys.path.remove(str(tmp_path))
    assert pruned.a.weight is pruned.b.weight
    assert pruned.c.out_features < 64
