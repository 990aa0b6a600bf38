"""Every family of bad input (docs/reliability.md) through the real CLI, with one contract: exit 2 (3 for a
failed gate), exactly one `error:` line on stderr, no traceback, nothing left in --out, TMPDIR or the cache, and
the user's own files byte-identical afterwards."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import MODELS, Run, assert_user_error

pytestmark = pytest.mark.slow  # ~20 CLI runs; CI runs them all

RESNET = [f"{MODELS}:resnet_like", "--input-shape", "1,3,32,32"]


class _System:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _files(tmp: Path) -> None:
    x = torch.rand(40, 3, 32, 32)
    nan = x.clone()
    nan[7, 0, 0, 0] = float("nan")
    torch.save((nan, torch.zeros(40, dtype=torch.long)), tmp / "nan.pt")
    np.savez(tmp / "inf.npz", inputs=np.where(np.arange(40 * 3 * 32 * 32).reshape(40, 3, 32, 32) == 5, np.inf,
                                              x.numpy()).astype(np.float32))
    torch.save((torch.rand(40, 3, 17, 5), torch.zeros(40, dtype=torch.long)), tmp / "small.pt")
    (tmp / "empty.txt").write_text("")
    with open(tmp / "evil.pt", "wb") as fh:
        pickle.dump(_System(), fh)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 32, 32)), str(tmp / "script.pt"))
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), str(tmp / "model.onnx"), dynamo=False)
    (tmp / "rnn.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        class G(nn.Module):
            def __init__(self):
                super().__init__(); self.emb = nn.Linear(16, 64); self.rnn = nn.GRU(64, 64, batch_first=True)
                self.fc = nn.Linear(64, 4)
            def forward(self, x):
                y, _ = self.rnn(self.emb(x)); return self.fc(y[:, -1])
        def gru(): return G()
    '''))
    (tmp / "nan_model.py").write_text(textwrap.dedent('''
        import torch, torch.nn as nn
        class N(nn.Module):
            def __init__(self):
                super().__init__(); self.c = nn.Conv2d(3, 8, 3)
            def forward(self, x):
                return self.c(x) * float("nan")
        def build(): return N()
    '''))


FAMILIES = {  # name -> (argv after `p2d`, fragments of the one line)
    "NaN in --data": (["compile", *RESNET, "--data", "nan.pt"], ["--data nan.pt", "sample 7", "NaN"]),
    "Inf in --val-data": (["compile", *RESNET, "--val-data", "inf.npz"], ["--val-data inf.npz", "Inf"]),
    "data of another size": (["compile", *RESNET, "--data", "small.pt"], ["17x5", "32x32"]),
    "empty text data": (["compile", f"{MODELS}:transformer_like", "--input", "tokens:1x16:int64", "--data",
                         "text:empty.txt"], ["no sentences"]),
    "code pickle as MODEL": (["compile", "evil.pt", "--input-shape", "1,3,32,32"], ["posix.system", "not trusted"]),
    "code pickle trusted anyway": (["compile", "evil.pt", "--input-shape", "1,3,32,32", "--trust", "posix"],
                                   ["posix.system"]),
    "code pickle as --example-inputs": (["compile", f"{MODELS}:resnet_like", "--example-inputs", "evil.pt"],
                                        ["posix.system", "will not unpickle code"]),
    "code pickle as --data": (["compile", *RESNET, "--data", "evil.pt"], ["will not unpickle code"]),
    "TorchScript as MODEL": (["compile", "script.pt", "--input-shape", "1,3,32,32"], ["TorchScript"]),
    "ONNX as MODEL": (["compile", "model.onnx", "--input-shape", "1,3,32,32"], ["ONNX"]),
    "huge input shape": (["compile", f"{MODELS}:resnet_like", "--input-shape", "1,3,20000,20000"], ["GB"]),
    "recurrent layer it cannot trace": (["compile", "rnn.py:gru", "--input-shape", "1,8,16"], ["rnn (GRU)"]),
    "model that outputs NaN": (["compile", "nan_model.py:build", "--input-shape", "1,3,32,32"], ["not finite"]),
    "flag value": (["compile", *RESNET, "--ratio", "abc"], ["--ratio", "abc"]),
    "unknown precision": (["compile", *RESNET, "--precision", "int4"], ["int4"]),
    "int8 without samples": (["compile", *RESNET, "--precision", "int8"], ["calibrates on real samples"]),
    "gate on a missing field": (["compile", *RESNET, "--gate", "nosuchfield>=1", "--no-benchmark"], ["nosuchfield"]),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "tmp" not in p.relative_to(root).parts[:1]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-inputs")
    _files(root)
    return root


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_is_one_line_and_leaves_nothing(family, inputs, tmp_path):
    argv, fragments = FAMILIES[family]
    for p in inputs.iterdir():  # the user's files, in the working directory
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "tmp").mkdir()
    before = _snapshot(tmp_path)
    env = {**os.environ, "CI": "1", "TMPDIR": str(tmp_path / "tmp"), "P2D_CACHE_DIR": str(tmp_path / "cache"),
           "GITHUB_STEP_SUMMARY": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "prune2deploy", *argv, "--out", "out"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert_user_error(Run(done.returncode, done.stdout, done.stderr), *fragments)
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not [p for p in (tmp_path / "tmp").rglob("*") if p.is_file() or p.name.startswith("p2d-work-")]
    assert _snapshot(tmp_path) == before
