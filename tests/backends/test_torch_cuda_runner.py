"""torch-cuda backend without a GPU: availability wording, the compile mode and its options reaching
torch.compile (a recording stand-in, the GPU probe faked), quiet compile, placement (dtype, channels_last),
the interleaved timing loop; conversion, compile and timing for real where a CUDA GPU exists."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from prune2deploy.backends.torch_cuda import semi_structured as ss
from prune2deploy.backends.torch_cuda import runner as tc
from prune2deploy.errors import MissingDependency, P2DError
from prune2deploy.passes.nm import nm_mask


class CompileSpy:
    """Stands in for torch.compile: records the mode and, per call of the compiled model, the inductor
    setting that hides autotune tables."""

    def __init__(self, fail: Exception | None = None):
        self.modes, self.runs, self.fail = [], [], fail

    def __call__(self, model, mode=None, **kw):
        self.modes.append(mode)

        def compiled(*args, **kwargs):
            from torch._inductor import config

            self.runs.append(config.autotune_num_choices_displayed)
            if self.fail:
                raise self.fail
            return model(*args, **kwargs)
        return compiled


@pytest.fixture
def fake_gpu(monkeypatch):
    """A 'GPU' that is this CPU: the probe answers sm_90, tensors stay on the CPU, sync is a no-op."""
    monkeypatch.setattr(tc, "_probe_gpu", lambda: ("Fake H100", (9, 0)))
    monkeypatch.setattr(tc, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    spy = CompileSpy()
    monkeypatch.setattr(torch, "compile", spy)
    spy.steps = steps
    return spy


def test_compile_mode_table():
    assert tc.compile_mode() == "reduce-overhead"  # CUDA graphs, no autotuning: the default
    assert tc.compile_mode(cuda_graphs=False) == "default"
    assert tc.compile_mode(autotune=True) == "max-autotune"
    assert tc.compile_mode(cuda_graphs=False, autotune=True) == "max-autotune-no-cudagraphs"


@pytest.mark.parametrize("cuda_graphs,autotune,mode", [(True, False, "reduce-overhead"), (False, False, "default"),
                                                       (True, True, "max-autotune"),
                                                       (False, True, "max-autotune-no-cudagraphs")])
def test_options_reach_torch_compile_and_first_runs_happen_at_compile(fake_gpu, cuda_graphs, autotune, mode):
    model = nn.Linear(8, 4).eval()
    x = torch.randn(2, 8)
    compiled = tc.compile_model(model, (x,), cuda_graphs=cuda_graphs, autotune=autotune)
    assert fake_gpu.modes == [mode]
    assert len(fake_gpu.runs) == tc.WARM_RUNS  # compilation and graph capture happen here, not when timed
    assert set(fake_gpu.runs) == {0}  # autotune tables hidden while compiling
    assert len(fake_gpu.steps) == (tc.WARM_RUNS if cuda_graphs else 0)
    torch.testing.assert_close(compiled(x), model(x))


def test_compile_logs_shown_with_debug(fake_gpu):
    logger = logging.getLogger("prune2deploy")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        tc.compile_model(nn.Linear(8, 4), (torch.randn(2, 8),))
    finally:
        logger.setLevel(old)
    assert fake_gpu.runs == [10] * tc.WARM_RUNS  # torch's own default: the tables show


def test_compile_failure_is_one_line(monkeypatch, fake_gpu):
    monkeypatch.setattr(torch, "compile", CompileSpy(fail=RuntimeError("inductor broke\nlong trace")))
    with pytest.raises(P2DError, match=r"torch.compile \(mode reduce-overhead\) failed: RuntimeError: inductor "
                                       r"broke$") as info:
        tc.compile_model(nn.Linear(8, 4), (torch.randn(2, 8),))
    assert "--no-cuda-graphs" in info.value.hint


def test_prepare_places_dtype_and_channels_last_and_leaves_the_callers_model(fake_gpu):
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval()
    model, args, kwargs, facts = tc.prepare(conv, (torch.randn(1, 3, 16, 16),), {"scale": torch.tensor(2)},
                                            dtype="bf16")
    assert facts == {"dtype": "bfloat16", "channels_last": True, "semi_structured_layers": 0}
    assert args[0].dtype == torch.bfloat16 and args[0].is_contiguous(memory_format=torch.channels_last)
    assert model[0].weight.dtype == torch.bfloat16
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert kwargs["scale"].dtype == torch.int64  # integer inputs (token ids) keep their type
    assert conv[0].weight.dtype == torch.float32  # the caller's model is untouched
    _, args, _, facts = tc.prepare(nn.Linear(8, 4), (torch.randn(2, 8),), dtype="fp16")
    assert facts["channels_last"] is False and args[0].dtype == torch.float16


def test_availability_reason_wording():
    assert tc.availability_reason(("NVIDIA H100", (9, 0)), sparse_2to4=True) == ""
    assert tc.availability_reason(("Tesla T4", (7, 5)), sparse_2to4=False) == ""
    reason = tc.availability_reason(("Tesla T4", (7, 5)), sparse_2to4=True)
    assert "sparse tensor cores" in reason and "same p2d compile" in reason
    no_gpu = tc.availability_reason(None)
    assert "same p2d compile on a machine with a CUDA GPU" in no_gpu
    assert "CPU-only" in no_gpu or "no CUDA GPU" in no_gpu


def test_availability_here_and_refusals():
    ok, _ = tc.availability()
    if ok:
        pytest.skip("a CUDA GPU is present; the refusal path is not reachable")
    with pytest.raises(MissingDependency, match="torch-cuda"):
        tc.prepare(nn.Linear(16, 16), (torch.randn(2, 16),))
    with pytest.raises(MissingDependency):
        tc.compile_model(nn.Linear(16, 16), (torch.randn(2, 16),))
    with pytest.raises(MissingDependency):
        tc.benchmark({"a": lambda x: x}, (torch.randn(1),))


class RecordingTimer:
    """CPU stand-in for the CUDA-event timer: one 1 ms sample per start()."""

    def __init__(self):
        self.samples = []

    def start(self):
        self.samples.append(1.0)

    def stop(self):
        pass

    def samples_ms(self):
        return list(self.samples)


def test_variants_are_interleaved_and_rotated():
    calls = []
    models = {name: (lambda name: lambda x, scale=None: calls.append((name, scale)))(name) for name in "ABC"}
    samples = tc.interleaved_runs(models, (torch.zeros(1),), warmup=1, iters=3, make_timer=RecordingTimer,
                                  kwargs={"scale": 2})
    assert [name for name, _ in calls[:3]] == ["A", "B", "C"]  # warm-up round
    assert [name for name, _ in calls[3:]] == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert {scale for _, scale in calls} == {2}
    assert {k: len(v) for k, v in samples.items()} == {"A": 3, "B": 3, "C": 3}


def test_time_budget_adds_rounds():
    models = {"A": lambda x: None, "B": lambda x: None}
    samples = tc.interleaved_runs(models, (None,), warmup=0, iters=2, make_timer=RecordingTimer, budget_s=0.05)
    assert len(samples["A"]) > 2 and len(samples["A"]) == len(samples["B"])


def _masked_linear(cin: int, cout: int) -> nn.Linear:
    linear = nn.Linear(cin, cout)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight, 2, 4))
    return linear


def test_measured_2to4_compiles_and_matches_dense_on_gpu():
    ok, reason = tc.availability(sparse_2to4=True)
    if not ok:
        pytest.skip(f"needs an Ampere+ CUDA GPU: {reason}")
    torch.manual_seed(0)
    model = nn.Sequential(_masked_linear(1024, 4096), nn.ReLU(), _masked_linear(4096, 1024)).eval()
    x = torch.randn(4096, 1024)
    result = tc.decide_2to4(model, (x,), {}, "fp16", margin=0.05)
    assert [d["name"] for d in result["decisions"]] == ["0", "2"]
    assert all(d["dense_ms"] > 0 for d in result["decisions"])
    forced = [{**d, "decision": "2:4", "backend": next(iter(d["sparse_ms"]))} for d in result["decisions"]
              if d["sparse_ms"]]
    if not forced:
        pytest.skip(f"no semi-structured kernel runs here: {result['decisions'][0]['refused']}")
    dense, args, _, _ = tc.prepare(model, (x,), {}, "fp16")
    sparse, _, _, facts = tc.prepare(model, (x,), {}, "fp16", forced)
    assert facts["semi_structured_layers"] == len(forced)
    assert isinstance(sparse[0].weight, torch.sparse.SparseSemiStructuredTensor)
    compiled = {"dense": tc.compile_model(dense, args), "2:4": tc.compile_model(sparse, args)}
    with torch.no_grad():
        torch.testing.assert_close(compiled["2:4"](*args).float(), compiled["dense"](*args).float(),
                                   rtol=2e-2, atol=2e-2)
    samples = tc.benchmark(compiled, args, warmup=3, iters=10)
    assert all(len(v) == 10 and min(v) > 0 for v in samples.values())
    assert (result["summary"] == ss.NO_LAYER_FASTER) == (not result["kept"])
