"""--target torch-cuda through prune2deploy.compile on a CPU posing as a GPU (probe faked, torch.compile
recorded, CUDA events replaced by a wall clock, GEMM timings recorded): the options reach torch.compile, the
compile happens in its own stage, 2:4 decisions land in report.sparsity, --stage-timeout stops a compile,
and every torch-cuda flag is a CompileOptions field and a recipe key."""
from __future__ import annotations

import json
import time

import pytest
import torch

import prune2deploy
from prune2deploy.backends.torch_cuda import semi_structured as ss
from prune2deploy.backends.torch_cuda import runner as tc
from prune2deploy.cli.app import build_parser
from prune2deploy.errors import UserError
from prune2deploy.runtime.progress import Progress
from prune2deploy.config.recipe import compile_options, load_recipe, merge
from prune2deploy.runtime.watchdog import Limits

from models import mlp_like
from test_torch_cuda_runner import CompileSpy
from prune2deploy.pipeline import Output


class WallClockTimer:
    def __init__(self):
        self.samples, self.t0 = [], 0.0

    def start(self):
        self.t0 = time.perf_counter()

    def stop(self):
        self.samples.append((time.perf_counter() - self.t0) * 1000)

    def samples_ms(self):
        return list(self.samples)


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(tc, "_probe_gpu", lambda: ("Fake H100", (9, 0)))
    monkeypatch.setattr(tc, "DEVICE", "cpu")
    monkeypatch.setattr(tc, "_CudaEventTimer", WallClockTimer)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    spy = CompileSpy()
    monkeypatch.setattr(torch, "compile", spy)
    return spy


@pytest.fixture
def recorded_gemms(monkeypatch):
    """A GPU with cuSPARSELt whose 2:4 GEMMs with 64 inputs run 2x faster; CUTLASS refuses (as on sm_90)."""
    measured, converted = [], []
    monkeypatch.setattr(ss, "backends_here", lambda: ss.BACKENDS)

    def device_gemm_measure(dtype):
        def measure(shape, kinds):
            measured.append((shape, kinds, dtype))
            sparse = 0.5 if shape.k == 64 else 3.0
            return {k: 1.0 if k == "dense" else (sparse if k == "cusparselt" else "refused on sm_90") for k in kinds}
        return measure

    def semi_structured(weight, backend):
        converted.append((tuple(weight.shape), backend))
        return weight  # a CPU cannot hold semi-structured tensors; the dense weight computes the same
    monkeypatch.setattr(ss, "device_gemm_measure", device_gemm_measure)
    monkeypatch.setattr(ss, "semi_structured", semi_structured)
    return measured, converted


@pytest.mark.slow
def test_compile_with_measured_2to4_on_a_fake_gpu(fake_gpu, recorded_gemms, tmp_path):
    measured, converted = recorded_gemms
    result = prune2deploy.compile(mlp_like(), torch.randn(32, 64), target="torch-cuda", out_dir=tmp_path / "out",
                                  sparsity="2:4", dtype="bf16", cuda_graphs=False, autotune=True,
                                  sparsity_margin=0.1, bench_seconds=0.2, min_iters=5, output=Output(use_cache=False))
    report = result.report
    settings = report["benchmark"]["settings"]
    assert settings["mode"] == "max-autotune-no-cudagraphs" and settings["dtype"] == "bfloat16"
    assert settings["cuda_graphs"] is False and settings["autotune"] is True and settings["channels_last"] is False
    # dense, pruned, pruned_2to4 and its dense-weight twin, each compiled and run in its own stage
    assert fake_gpu.modes == ["max-autotune-no-cudagraphs"] * 4
    assert len(fake_gpu.runs) >= 4 * tc.WARM_RUNS
    for name in ("dense", "pruned", "pruned_2to4", "pruned_2to4_dense_weights"):
        assert name in settings["compile_s"] and f"compile_{name}" in report["stages_s"]
    assert "sparsity_decisions" in report["stages_s"]
    assert any(w.startswith("--autotune: compiling took") for w in report["warnings"])

    sparsity = report["sparsity"]
    assert sparsity["margin"] == 0.1 and sparsity["dtype"] == "bf16"
    assert {d["name"] for d in sparsity["decisions"]} == {n for n, m in result.pruned.named_modules()
                                                          if isinstance(m, torch.nn.Linear)}
    timed = [d for d in sparsity["decisions"] if "dense_ms" in d]
    assert timed and all(d["dense_ms"] == 1.0 and "cusparselt" in d["sparse_ms"] for d in timed)
    # pruned to 64 -> 64 -> 64 -> 10: the two 64x64 layers share one GEMM shape, timed once; the
    # classifier (10 outputs) was left dense by the sparsity pass
    assert measured == [(ss.GemmShape(32, 64, 64, True), ("dense", "cusparselt", "cutlass"), torch.bfloat16)]
    assert [d["name"] for d in timed] == ["0", "2"] and all(d["speedup"] == 2.0 for d in timed)
    assert all(d["refused"] == {"cutlass": "refused on sm_90"} for d in timed)
    assert "2:4 pattern" in next(d for d in sparsity["decisions"] if d["name"] == "4")["reason"]
    whole = sparsity["whole_model"]
    if whole["kept"]:
        assert sparsity["kept"] == ["0", "2"] and converted == [((64, 64), "cusparselt")] * 2
    else:  # the wall clock said the 2:4 model was slower: every layer went back to dense
        assert sparsity["kept"] == [] and report["models"]["pruned_2to4"]["latency_ms"]["p50"] == \
            whole["dense_weights_p50_ms"]
    assert "pruned_2to4_dense_weights" not in report["models"]
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["sparsity"]["decisions"] == sparsity["decisions"]
    assert sparsity["summary"] in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_default_torch_cuda_compile_uses_cuda_graphs_and_channels_last(fake_gpu, tmp_path):
    nn = torch.nn
    convnet = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    result = prune2deploy.compile(convnet, torch.randn(1, 3, 16, 16), target="torch-cuda",
                                  out_dir=tmp_path / "out", bench_seconds=0.1, min_iters=3,
                                      output=Output(use_cache=False))
    settings = result.report["benchmark"]["settings"]
    assert fake_gpu.modes == ["reduce-overhead"] * 2
    assert settings["channels_last"] is True and settings["dtype"] == "float16"
    assert "sparsity" not in result.report


@pytest.mark.slow
def test_no_layer_faster_keeps_2to4_dense_and_compiles_no_twin(fake_gpu, monkeypatch, tmp_path):
    monkeypatch.setattr(ss, "device_gemm_measure", lambda dtype: lambda shape, kinds: {
        k: 0.056 if k == "dense" else 1.156 for k in kinds})
    result = prune2deploy.compile(mlp_like(), torch.randn(32, 64), target="torch-cuda", out_dir=tmp_path / "out",
                                  sparsity="2:4", bench_seconds=0.1, min_iters=3, output=Output(use_cache=False))
    assert result.report["sparsity"]["summary"] == ss.NO_LAYER_FASTER
    assert len(fake_gpu.modes) == 3  # dense, pruned, pruned_2to4: nothing semi-structured, no twin needed
    assert ss.NO_LAYER_FASTER in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_stage_timeout_stops_a_compile_with_one_line(fake_gpu, monkeypatch, tmp_path):
    def slow_compile(model, mode=None):
        def run(*args, **kwargs):
            for _ in range(600):
                time.sleep(0.05)
        return run
    monkeypatch.setattr(torch, "compile", slow_compile)
    progress = Progress(enabled=False, limits=Limits(stage_timeout_s=4.0))
    with pytest.raises(UserError, match=r"stage compile_dense took longer than 4 s \(--stage-timeout\)"):
        prune2deploy.compile(mlp_like(), torch.randn(2, 64), target="torch-cuda", out_dir=tmp_path / "out",
                             progress=progress, output=Output(use_cache=False))
    assert not (tmp_path / "out").exists()


def test_torch_cuda_flags_are_options_and_recipe_keys(tmp_path):
    parser = build_parser()
    argv = ["compile", "m.pt", "--input-shape", "1,8", "--dtype", "bf16", "--no-cuda-graphs", "--autotune",
            "--sparsity-margin", "0.1"]
    options = compile_options(merge(None, parser.parse_args(argv), parser, argv)).validate()
    assert (options.dtype, options.cuda_graphs, options.autotune, options.sparsity_margin) == ("bf16", False, True, 0.1)
    defaults = compile_options(merge(None, parser.parse_args(argv[:4]), parser, argv[:4]))
    assert (defaults.dtype, defaults.cuda_graphs, defaults.autotune, defaults.sparsity_margin) == \
        ("fp16", True, False, 0.05)
    recipe = tmp_path / "p2d.toml"
    recipe.write_text('[sparsity]\nmargin = 0.2\n[torch_cuda]\ndtype = "bf16"\ncuda_graphs = false\nautotune = true\n')
    assert load_recipe(recipe).options == {"sparsity_margin": 0.2, "dtype": "bf16", "cuda_graphs": False,
                                           "autotune": True}
    recipe.write_text('[torch_cuda]\ndtype = "fp8"\n')
    with pytest.raises(UserError, match=r"p2d.toml:2:1: torch_cuda.dtype = 'fp8': unknown dtype"):
        load_recipe(recipe)
    with pytest.raises(UserError, match="sparsity margin 1.5 is outside"):
        compile_options(merge(None, parser.parse_args(argv[:4] + ["--sparsity-margin", "1.5"]), parser,
                              argv[:4] + ["--sparsity-margin", "1.5"])).validate()
