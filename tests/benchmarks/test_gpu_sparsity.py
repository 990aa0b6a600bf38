"""benchmarks/gpu_sparsity.py without a GPU: it refuses with one line, and its target checks read rows right."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_sparsity  # noqa: E402


def test_refuses_without_a_gpu_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_sparsity.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gpu_sparsity: needs a CUDA GPU and this torch is a CPU-only build; run it on a GPU machine"]


def _row(model, batch, ratio, speedup, twin=None, wall=60.0):
    return {"model": model, "batch": batch, "ratio": ratio, "speedup": speedup, "vs_dense_weight_twin": twin,
            "compile_wall_s": wall}


def test_targets_pass_fail_and_not_measured():
    rows = [_row("resnet50", 32, 0.5, 1.50, wall=170), _row("resnet50", 1, 0.5, 1.1, twin=0.97, wall=190),
            _row("bert", 32, 0.5, 1.2, twin=1.02), {"model": "bert", "batch": 1, "ratio": 0.5, "error": "exit 1"}]
    assert gpu_sparsity.evaluate_targets(rows) == [
        "PASS ResNet-50 batch 32 at 0.5: speedup >= 1.45x: 1.50x",
        "FAIL BERT-base 32x128 at 0.5: speedup >= 1.3x: 1.20x",
        "FAIL pruned+2:4 >= 0.98x of its dense-weight twin: worst 0.97x (resnet50 b1 0.5)",
        "FAIL ResNet-50 compile incl. benchmark <= 180 s: slowest 190 s"]
    assert gpu_sparsity.evaluate_targets([]) == [
        "- ResNet-50 batch 32 at 0.5: speedup >= 1.45x: not measured",
        "- BERT-base 32x128 at 0.5: speedup >= 1.3x: not measured",
        "- pruned+2:4 >= 0.98x of its dense-weight twin: no row kept a 2:4 layer, nothing to compare",
        "- ResNet-50 compile incl. benchmark <= 180 s: not measured"]
