"""What the exported graph is: facts read off the ONNX file that the lowering steps of several targets use."""
from __future__ import annotations

from pathlib import Path


def is_transformer(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    return "Softmax" in ops and "MatMul" in ops


def without_value_info(src: Path, dst: Path) -> Path:
    """`src` without its intermediate shape annotations, at `dst`: onnxruntime's quantizers rerun strict shape
    inference, which rejects annotations an exporter or onnxslim left stale (ViT-B/16: 768 vs 1000) although the
    graph itself runs. Weights stay in the file or beside it as in `src`."""
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    large = model.ByteSize() > 2**31 - 2**20
    onnx.save(model, str(dst), save_as_external_data=large, location=f"{dst.name}.data" if large else None)
    return dst
