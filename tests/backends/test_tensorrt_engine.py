"""TensorRT backend: the build plan and its translation to API calls, checked against a
recording fake `trt` module; inspector/log parsing on fixtures; a real build where TensorRT exists."""
from __future__ import annotations

import enum
import json
from pathlib import Path
from types import SimpleNamespace

import pytest





from prune2deploy.backends.tensorrt import engine as trt_backend
from prune2deploy.errors import MissingDependency, UserError  # noqa: E402


# ---------------------------------------------------------------- recording fake of the tensorrt module


class FakeNetworkFlag(enum.IntEnum):
    STRONGLY_TYPED = 0  # TensorRT 10/11: STRONGLY_TYPED = bit 0 (EXPLICIT_BATCH is gone)


class FakeBuilderFlag(enum.Enum):
    # TensorRT 11 has no FP16/INT8 members: asking for them would raise AttributeError.
    SPARSE_WEIGHTS = "SPARSE_WEIGHTS"
    TF32 = "TF32"


class FakeHardwareLevel(enum.Enum):
    NONE = "NONE"
    AMPERE_PLUS = "AMPERE_PLUS"
    SAME_COMPUTE_CAPABILITY = "SAME_COMPUTE_CAPABILITY"


fake_trt = SimpleNamespace(
    NetworkDefinitionCreationFlag=FakeNetworkFlag,
    BuilderFlag=FakeBuilderFlag,
    HardwareCompatibilityLevel=FakeHardwareLevel,
    MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
    ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY"),
)


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class FakeBuilder:
    def create_optimization_profile(self):
        return FakeProfile()


class FakeConfig:
    def __init__(self):
        self.flags, self.pools, self.profiles = [], {}, []
        self.hardware_compatibility_level = FakeHardwareLevel.NONE
        self.profiling_verbosity = "LAYER_NAMES_ONLY"
        self.timing_cache_blob = self.timing_cache_set = None

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, limit):
        self.pools[pool] = limit

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob):
        self.timing_cache_blob = bytes(blob)
        return ("cache", self.timing_cache_blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache_set = (cache, ignore_mismatch)
        return True


class FakeNetwork:
    def __init__(self, inputs):
        self._inputs = [SimpleNamespace(name=n, shape=s) for n, s in inputs.items()]
        self.num_inputs = len(self._inputs)

    def get_input(self, i):
        return self._inputs[i]


def _apply(settings, inputs, engine_path=None):
    plan = trt_backend.plan_build(settings, engine_path)
    config = FakeConfig()
    applied = trt_backend.apply_plan(fake_trt, FakeBuilder(), config, FakeNetwork(inputs), plan)
    return plan, config, applied


def _settings(target="trt", **kw):
    kw.setdefault("input_shapes", {"input": (8, 3, 32, 32)})
    return trt_backend.BuildSettings(target=trt_backend.target_spec(target), **kw)


STATIC = {"input": (8, 3, 32, 32)}
DYNAMIC = {"input": (-1, 3, 32, 32)}


# ---------------------------------------------------------------- plan -> API


def test_trt_ampere_sets_ampere_plus_and_trt_does_not():
    _, ampere, _ = _apply(_settings("trt-ampere"), STATIC)
    assert ampere.hardware_compatibility_level is FakeHardwareLevel.AMPERE_PLUS
    _, native, _ = _apply(_settings("trt"), STATIC)
    assert native.hardware_compatibility_level is FakeHardwareLevel.NONE  # left at TensorRT's default
    _, hopper, _ = _apply(_settings("trt-hopper"), STATIC)
    assert hopper.hardware_compatibility_level is FakeHardwareLevel.NONE


@pytest.mark.parametrize("sparse", [True, False])
def test_sparse_weights_flag_set_iff_sparse(sparse):
    plan, config, _ = _apply(_settings(sparse_weights=sparse), STATIC)
    assert (FakeBuilderFlag.SPARSE_WEIGHTS in config.flags) is sparse
    assert config.flags == ([FakeBuilderFlag.SPARSE_WEIGHTS] if sparse else [])


def test_no_precision_flag_is_ever_requested():
    for target in trt_backend.TRT_TARGETS:
        for sparse in (True, False):
            plan = trt_backend.plan_build(_settings(target, sparse_weights=sparse))
            assert not {"FP16", "INT8", "BF16", "FP8"} & set(plan["builder_flags"])
            assert "strongly typed" in plan["precision"]
    # The fake BuilderFlag has no FP16 member (as in TensorRT 11), yet applying works.
    _apply(_settings("trt-ampere", sparse_weights=True), STATIC)


def test_network_is_created_strongly_typed():
    plan = trt_backend.plan_build(_settings())
    assert plan["network_flags"] == ["STRONGLY_TYPED"]
    assert trt_backend.network_creation_flags(fake_trt, plan) == 1 << 0
    # A TensorRT without the member (strong typing always on) gets no flag rather than an error.
    no_member = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace())
    assert trt_backend.network_creation_flags(no_member, plan) == 0


def test_workspace_and_detailed_profiling_verbosity():
    _, config, _ = _apply(_settings(workspace_bytes=1 << 30), STATIC)
    assert config.pools == {"WORKSPACE": 1 << 30}
    assert config.profiling_verbosity == "DETAILED"  # needed for TacticName in the inspector


def test_dynamic_batch_gives_min_opt_max_profile_per_input():
    shapes = {"input_ids": (4, 128), "attention_mask": (4, 128)}
    settings = _settings(input_shapes=shapes, dynamic_batch=(1, 16, 32))
    network = {"input_ids": (-1, 128), "attention_mask": (-1, 128)}
    plan, config, _ = _apply(settings, network)
    assert len(config.profiles) == 1
    assert config.profiles[0].shapes == {
        "input_ids": ((1, 128), (16, 128), (32, 128)),
        "attention_mask": ((1, 128), (16, 128), (32, 128)),
    }
    assert plan["optimization_profiles"][0]["input_ids"]["opt"] == [16, 128]


def test_static_build_adds_no_profile_and_dynamic_onnx_without_one_is_refused():
    _, config, _ = _apply(_settings(), STATIC)
    assert config.profiles == []
    with pytest.raises(UserError, match="dynamic dimensions"):
        _apply(_settings(), DYNAMIC)


def test_bad_dynamic_batch_and_unknown_profile_input_are_user_errors():
    with pytest.raises(UserError, match="min <= opt <= max"):
        trt_backend.plan_build(_settings(dynamic_batch=(8, 4, 16)))
    with pytest.raises(UserError, match="does not have: pixels"):
        _apply(_settings(input_shapes={"pixels": (1, 3, 8, 8)}, dynamic_batch=(1, 1, 2)), DYNAMIC)


def test_timing_cache_sits_beside_engine_and_is_reused(tmp_path):
    engine = tmp_path / "out" / "model.engine"
    plan, config, applied = _apply(_settings(), STATIC, engine)
    assert Path(plan["timing_cache"]) == engine.parent / "model.timing.cache"
    assert config.timing_cache_blob == b"" and applied["timing_cache_reused"] is False
    assert config.timing_cache_set == (("cache", b""), False)

    engine.parent.mkdir(parents=True)
    Path(plan["timing_cache"]).write_bytes(b"previous-tactics")
    _, config, applied = _apply(_settings(), STATIC, engine)
    assert config.timing_cache_blob == b"previous-tactics" and applied["timing_cache_reused"] is True


def test_explicit_timing_cache_path_wins(tmp_path):
    plan = trt_backend.plan_build(_settings(timing_cache_path=str(tmp_path / "shared.cache")), tmp_path / "a.engine")
    assert plan["timing_cache"] == str(tmp_path / "shared.cache")


def test_plan_is_json_serialisable_and_records_fp32_layers():
    plan = trt_backend.plan_build(_settings("trt-hopper", fp32_layers=["/ln/LayerNorm"]))
    assert json.loads(json.dumps(plan))["fp32_layers"] == ["/ln/LayerNorm"]
    assert plan["required_compute_capability"] == [9, 0]


# ---------------------------------------------------------------- targets and availability


def test_targets_and_alignment():
    assert set(trt_backend.TRT_TARGETS) == {"trt", "trt-ampere", "trt-hopper"}
    assert trt_backend.TRT_TARGETS["trt-ampere"].hardware_compatibility == "AMPERE_PLUS"
    assert trt_backend.TRT_TARGETS["trt"].compute_capability is None
    spec = trt_backend.TRT_TARGETS["trt"]
    assert spec.channel_multiple(sparse=False) == 8 and spec.channel_multiple(sparse=True) == 16
    with pytest.raises(UserError, match="unknown TensorRT target"):
        trt_backend.target_spec("trt-volta")


def test_availability_reason_is_pure_and_specific():
    h100, a100, t4 = ("NVIDIA H100", (9, 0)), ("NVIDIA A100", (8, 0)), ("Tesla T4", (7, 5))
    assert trt_backend.availability_reason("10.9.0", h100, "trt-hopper") == ""
    assert trt_backend.availability_reason("10.9.0", a100, "trt-ampere") == ""
    assert "compute capability >= 9.0" in trt_backend.availability_reason("10.9.0", a100, "trt-hopper")
    assert "compute capability >= 8.0" in trt_backend.availability_reason("10.9.0", t4, "trt-ampere")
    assert "Hopper" in trt_backend.availability_reason("10.9.0", ("B200", (10, 0)), "trt-hopper")
    both = trt_backend.availability_reason(None, None, "trt")
    assert "TensorRT is not installed" in both and "no CUDA GPU" in both and "p2d build OUT_DIR" in both


def test_availability_here_says_what_is_missing_and_how_to_finish():
    ok, reason = trt_backend.availability("trt-ampere")
    if ok:
        pytest.skip("TensorRT and a GPU are present here; the unavailable path is not reachable")
    assert "p2d build OUT_DIR" in reason
    assert "TensorRT is not installed" in reason or "GPU" in reason or "compute capability" in reason


def test_build_engine_without_tensorrt_raises_missing_dependency(tmp_path):
    if trt_backend.availability("trt")[0]:
        pytest.skip("TensorRT and a GPU are present here")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(MissingDependency, match="p2d build"):
        trt_backend.build_engine(onnx_file, _settings(), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


# ---------------------------------------------------------------- inspector and log parsing

# Fixture modelled on EngineInspector.get_engine_information(LayerInformationFormat.JSON) output
# for an engine built with ProfilingVerbosity.DETAILED ({"Layers": [...], "Bindings": [...]},
# per-layer "TacticName" and "HasSparseWeights"); tactic names follow TensorRT's sm80 xmma style.
INSPECTOR_JSON = json.dumps({
    "Layers": [
        {
            "Name": "/stem/conv/Conv + /stem/act/Relu", "LayerType": "CaskConvolution",
            "ParameterType": "Convolution", "Kernel": [3, 3], "OutMaps": 64,
            "Weights": {"Type": "Half", "Count": 1728}, "HasSparseWeights": 0,
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize128x64x32_stage4_warpsize2x2x1_g1_tensor16x8x16",
            "TacticValue": "0x9cb304e2edbc1221",
        },
        {
            "Name": "/block1/conv2/Conv", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
            "Weights": {"Type": "Half", "Count": 36864}, "HasSparseWeights": 1,
            "TacticName": "sm80_xmma_fprop_sparse_conv_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize128x128x64_stage3_warpsize2x2x1_g1_sptensor16x8x32",
            "TacticValue": "0x1f9d3e3a1b2c4d5e",
        },
        {
            "Name": "/fc/Gemm", "LayerType": "CaskGemmMatrixMultiply", "HasSparseWeights": 1,
            "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize64x64x64_stage4_warpsize2x2x1_tensor16x8x16",
            "TacticValue": "0x0000000000000001",
        },
        {"Name": "Reformatting CopyNode for Output Tensor 0", "LayerType": "Reformat", "TacticValue": "0x00000000000003e8"},
    ],
    "Bindings": ["input", "logits"],
})


def test_sparse_layers_from_inspector_json():
    layers = trt_backend.parse_layer_info(INSPECTOR_JSON)
    assert [layer["Name"] for layer in layers][1] == "/block1/conv2/Conv"
    # /fc/Gemm has sparse-eligible weights but TensorRT picked a dense tactic: not counted.
    assert trt_backend.sparse_layers(layers) == ["/block1/conv2/Conv"]


def test_layer_names_only_inspector_output():
    layers = trt_backend.parse_layer_info(json.dumps({"Layers": ["conv1", "fc"], "Bindings": ["x", "y"]}))
    assert layers == [{"Name": "conv1"}, {"Name": "fc"}]
    assert trt_backend.sparse_layers(layers) == []


def test_sparsity_report_from_build_log():
    # The two lines TensorRT logs at the end of a build with BuilderFlag.SPARSE_WEIGHTS.
    log = [
        "[MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 30, GPU 400 (MiB)",
        "(Sparsity) Layers eligible for sparse math: conv1, conv2, conv3",
        "(Sparsity) TRT inference plan picked sparse implementation for layers: conv2, conv3",
    ]
    assert trt_backend.parse_sparsity_log(log) == {"eligible": ["conv1", "conv2", "conv3"], "picked": ["conv2", "conv3"]}
    assert trt_backend.parse_sparsity_log([]) == {"eligible": [], "picked": []}


# ---------------------------------------------------------------- real TensorRT (skipped here)


@pytest.mark.tensorrt
def test_real_build_run_and_inspect(tmp_path):
    ok, reason = trt_backend.availability("trt")
    if not ok:
        pytest.skip(f"TensorRT build not possible here: {reason}")
    import numpy as np
    import onnxruntime as ort
    import torch

    from prune2deploy.backends.tensorrt import fp16
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128)).eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):  # 2:4 along the input axis
            w = layer.weight.reshape(layer.out_features, -1, 4)
            keep = w.abs().topk(2, dim=-1).indices
            layer.weight.copy_(torch.zeros_like(w).scatter(-1, keep, w.gather(-1, keep)).reshape_as(layer.weight))
    x = torch.randn(16, 256)
    torch.onnx.export(model, (x,), tmp_path / "m32.onnx", input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    fp16.to_fp16_onnx(tmp_path / "m32.onnx", tmp_path / "m16.onnx")
    settings = _settings(input_shapes={"input": (16, 256)}, sparse_weights=True, dynamic_batch=(1, 16, 32))
    info = trt_backend.build_engine(tmp_path / "m16.onnx", settings, tmp_path / "m.engine")
    assert (tmp_path / "m.engine").stat().st_size == info["bytes"] > 0
    assert Path(info["timing_cache"]["path"]).is_file()
    again = trt_backend.build_engine(tmp_path / "m16.onnx", settings, tmp_path / "m.engine")
    assert again["timing_cache"]["reused"] is True

    runner = trt_backend.TrtRunner(tmp_path / "m.engine", {"input": (16, 256)})
    out = runner.run({"input": x})["out"].float().cpu().numpy()
    ref = ort.InferenceSession(str(tmp_path / "m32.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)
    samples = runner.benchmark(warmup=5, iters=20)
    assert len(samples) == 20 and all(s > 0 for s in samples)
