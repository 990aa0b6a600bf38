"""Each target's channel alignment: ort-cpu follows this CPU's blocked-convolution width."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import prune2deploy
from prune2deploy.backends import registry as targets
from prune2deploy.backends.ort_cpu import cpu_channel_block
from prune2deploy.pipeline import Output


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_channel_block_is_16_with_avx512_else_8(tmp_path):
    assert cpu_channel_block(_cpuinfo(tmp_path, "avx avx2 avx512f avx512bw")) == 16
    assert cpu_channel_block(_cpuinfo(tmp_path, "avx avx2 fma")) == 8
    assert cpu_channel_block(_cpuinfo(tmp_path, "avx avx2 avx512_vnni")) == 8  # no avx512f: not the 16-wide kernels
    assert cpu_channel_block(str(tmp_path / "missing")) == 8


def test_targets_lists_each_alignment(p2d_in_process):
    r = p2d_in_process("targets", "--json")
    assert r.code == 0, r.stderr
    rows = {row["target"]: row for row in json.loads(r.stdout)}
    assert rows["ort-cpu"]["round_to"] == cpu_channel_block()
    assert rows["trt-ampere"]["round_to"] == 8


@pytest.mark.slow
def test_compile_without_round_to_takes_the_targets(monkeypatch, tmp_path):
    """At 0.3 of 64 channels --round-to 8 would keep 40 or 48: with the target at 16 every pruned width is a
    multiple of 16."""
    monkeypatch.setitem(targets.TARGETS, "ort-cpu", dataclasses.replace(targets.TARGETS["ort-cpu"], round_to=16))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 56, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(56, 8, 1)).eval()
    result = prune2deploy.compile(model, (torch.randn(1, 3, 16, 16),), target="ort-cpu", ratio=0.3,
                                  out_dir=tmp_path / "out", bench_seconds=0.2, threads=1,
                                      output=Output(use_cache=False))
    widths = [m.out_channels for m in result.pruned.modules() if isinstance(m, torch.nn.Conv2d)][:2]
    assert widths[0] < 64 and widths[1] < 56
    assert all(w % 16 == 0 for w in widths), widths
    assert result.report["options"]["round_to"] == 16
