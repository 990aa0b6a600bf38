"""What the exported graph is: facts read off the ONNX file that the lowering steps of several targets use."""
from __future__ import annotations

from pathlib import Path


def is_transformer(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    return "Softmax" in ops and "MatMul" in ops
