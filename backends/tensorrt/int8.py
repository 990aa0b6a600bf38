"""FP32 -> INT8 Q/DQ ONNX for the strongly typed TensorRT path.

TensorRT 11 removed the INT8 builder flag and its calibrators: a strongly typed network runs INT8 exactly where
the ONNX has QuantizeLinear/DequantizeLinear pairs. This writes them with onnxruntime's static quantization in
the form TensorRT reads (NVIDIA's ModelOpt ONNX quantizer needs CUDA libraries that do not install here):
  * symmetric INT8 everywhere: activations and weights QInt8 with zero point 0 (TensorRT rejects others);
  * per-channel weights on the output-channel axis, per-tensor activations, MinMax calibration on real samples;
  * biases stay FP32 (TensorRT folds them into the INT8 kernels itself);
  * Q/DQ on the inputs of the compute ops only (Conv, ConvTranspose, MatMul, Gemm): TensorRT fuses the rest and
    keeps the other layers in FP32.
The file is checked on the CPU in onnxruntime (against torch FP32) before any engine is built from it.
"""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

QDQ_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def to_int8_qdq_onnx(src: Path, dst: Path, calib_feeds: list[dict]) -> dict:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from prune2deploy.backends.ort_cpu.quantize import Feeds, run_quantizer

    start = time.perf_counter()
    names = [i.name for i in onnxruntime.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()]

    def quantize(source: Path, out: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(source), str(out), Feeds(calib_feeds, names), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=QDQ_OPS, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "QuantizeBias": False})

    run_quantizer(quantize, src, dst)
    pairs, nonzero = check_symmetric(onnx.load(str(dst)))
    if nonzero:
        raise RuntimeError(f"{dst.name}: {len(nonzero)} Q/DQ zero points are not 0 ({nonzero[:3]}): TensorRT rejects them")
    return {"onnx": dst.name, "precision": "int8", "format": "QDQ (symmetric INT8, zero point 0)",
            "quantizer": f"onnxruntime {onnxruntime.__version__} quantize_static", "ops": QDQ_OPS,
            "weights": "QInt8 per channel", "activations": "QInt8 per tensor", "calibration_feeds": len(calib_feeds),
            "quantize_linear_nodes": pairs, "seconds": round(time.perf_counter() - start, 2)}


def check_symmetric(model) -> tuple[int, list[str]]:
    """(QuantizeLinear nodes, names of zero points that are not INT8 zeros) of a Q/DQ ONNX model."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    bad = []
    for node in nodes:
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and (zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0)):
            bad.append(zp.name)
    return sum(n.op_type == "QuantizeLinear" for n in nodes), sorted(set(bad))
