"""FP16 ONNX conversion: weights become float16, accuracy-critical ops stay float32,
and onnxruntime (CPU) outputs stay within FP16 tolerance of the FP32 model."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn





from prune2deploy.backends.tensorrt import fp16
from prune2deploy.errors import UserError


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class TinyEncoder(nn.Module):
    """One pre-norm transformer block: LayerNorm, softmax attention, GELU (Erf) FFN."""

    def __init__(self, dim=64, heads=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.ln2(x))


def _export(model, example, path):
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False)
    return path


def _run(path, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": feed})[0]


def _tensor_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for value in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return types


@pytest.fixture(scope="module", params=["cnn", "encoder"])
def converted(request, tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "cnn":
        model, example = SmallCNN(), torch.randn(2, 3, 32, 32)
    else:
        model, example = TinyEncoder(), torch.randn(2, 16, 64)
    src = _export(model, example, tmp / "fp32.onnx")
    record = fp16.to_fp16_onnx(src, tmp / "fp16.onnx")
    return request.param, src, tmp / "fp16.onnx", record, example.numpy()


def test_outputs_agree_within_fp16_tolerance(converted):
    _, src, dst, _, feed = converted
    ref, out = _run(src, feed), _run(dst, feed)
    assert out.dtype == np.float32  # keep_io_types: callers still feed and read float32
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * scale)


def test_weights_are_float16_in_the_file(converted):
    _, src, dst, record, _ = converted
    model = onnx.load(str(dst))
    floats = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    big = [i for i in floats if np.prod(i.dims) >= 64]  # weight matrices / conv kernels
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    assert record["fp16_initializers"] >= len(big)
    assert record["bytes"] == dst.stat().st_size < src.stat().st_size * 0.6


def test_kept_ops_stay_float32(converted):
    kind, _, dst, record, _ = converted
    model = onnx.load(str(dst))
    types = _tensor_types(model)
    kept = [n for n in model.graph.node if n.op_type in fp16.DEFAULT_KEEP_FP32_OPS]
    if kind == "encoder":
        assert {"LayerNormalization", "Softmax", "Erf"} <= {n.op_type for n in kept}
        assert {"LayerNormalization", "Softmax", "Erf"} <= set(record["fp32_kept_ops"])
    for node in kept:
        for name in [*node.input[:1], *node.output]:
            assert types.get(name) == onnx.TensorProto.FLOAT, (node.op_type, node.name, name)
    # and the heavy ops do run in float16
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert matmuls and all(types.get(n.output[0]) == onnx.TensorProto.FLOAT16 for n in matmuls)


def test_named_nodes_can_be_kept_in_fp32(tmp_path):
    src = _export(SmallCNN(), torch.randn(1, 3, 16, 16), tmp_path / "cnn.onnx")
    head = next(n for n in onnx.load(str(src)).graph.node if n.op_type == "Gemm")
    record = fp16.to_fp16_onnx(src, tmp_path / "cnn16.onnx", keep_fp32_nodes=[head.name])
    types = _tensor_types(onnx.load(str(tmp_path / "cnn16.onnx")))
    assert record["fp32_kept_nodes"] == [head.name]
    assert types[head.output[0]] == onnx.TensorProto.FLOAT
    with pytest.raises(UserError, match="not in cnn.onnx"):
        fp16.to_fp16_onnx(src, tmp_path / "x.onnx", keep_fp32_nodes=["no_such_node"])


def test_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        fp16.to_fp16_onnx(tmp_path / "absent.onnx", tmp_path / "out.onnx")
