"""FP32 -> FP16 ONNX conversion for the strongly typed TensorRT path.

TensorRT 11 removed the FP16 builder flag: a strongly typed network runs in the
types the ONNX graph declares, so reduced precision has to be in the file. Ops
whose accuracy needs FP32 (normalisation, softmax, reductions, pow/sqrt/erf) stay
FP32, with Casts around them, as "layers kept in FP32 where accuracy needs it".
"""
from __future__ import annotations

import os
from pathlib import Path

from prune2deploy.errors import MissingDependency, UserError

# Ops that overflow or lose too much in FP16: sums of squares, exp, long reductions.
DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Exp",
    "Log",
)

_TWO_GIB = 2**31


def _converter():
    """The float16 converter that ships inside the onnxruntime wheel."""
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise MissingDependency(
            f"onnxruntime.transformers.float16 cannot be imported ({exc})",
            hint="reinstall onnxruntime (pip install 'onnxruntime>=1.20')",
        ) from exc
    return convert_float_to_float16, list(DEFAULT_OP_BLOCK_LIST)


def to_fp16_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    keep_fp32_ops: tuple[str, ...] | list[str] = DEFAULT_KEEP_FP32_OPS,
    keep_io_types: bool = True,
    keep_fp32_nodes: tuple[str, ...] | list[str] = (),
) -> dict:
    """Write an FP16 copy of the ONNX at `src` to `dst`; listed op types and node names stay FP32.

    Returns {fp16_initializers, fp32_initializers, fp32_kept_ops, fp32_kept_nodes, bytes}.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UserError(f"ONNX file not found: {src}")
    convert, default_block = _converter()
    model = onnx.load(str(src))
    block_ops = sorted(set(default_block) | set(keep_fp32_ops))
    known_nodes = {n.name for n in model.graph.node}
    missing = [n for n in keep_fp32_nodes if n not in known_nodes]
    if missing:
        raise UserError(
            f"nodes to keep in FP32 are not in {src.name}: {', '.join(missing[:5])}",
            hint="use node names as they appear in the ONNX graph (e.g. from netron or onnx.load)",
        )
    converted = convert(
        model,
        keep_io_types=keep_io_types,
        op_block_list=block_ops,
        node_block_list=list(keep_fp32_nodes) or None,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    large = converted.ByteSize() >= _TWO_GIB - (64 << 20)
    onnx.save_model(
        converted,
        str(tmp),
        save_as_external_data=large,
        location=dst.name + ".data" if large else None,
    )
    os.replace(tmp, dst)
    return fp16_record(converted, dst, keep_fp32_ops, keep_fp32_nodes)


def fp16_record(model, path: Path, keep_fp32_ops, keep_fp32_nodes=()) -> dict:
    """What the conversion did: initializer dtypes and which op types/nodes were kept in FP32."""
    import onnx

    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    dtypes = [init.data_type for init in model.graph.initializer]
    kept_ops = sorted({n.op_type for n in model.graph.node if n.op_type in set(keep_fp32_ops)})
    return {
        "fp16_initializers": sum(1 for d in dtypes if d == f16),
        "fp32_initializers": sum(1 for d in dtypes if d == f32),
        "fp32_kept_ops": kept_ops,
        "fp32_kept_nodes": list(keep_fp32_nodes),
        "bytes": path.stat().st_size,
    }
