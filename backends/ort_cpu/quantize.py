"""ort-cpu INT8 through onnxruntime.quantization, with the settings that are fast and accurate on x86 rather
than the API's defaults: unsigned (QUInt8) activations, so the u8 x s8 VNNI kernels run instead of the slow
signed-activation path; per-channel signed weights; static calibration for CNNs; dynamic quantization of
MatMul/Gemm only for transformers (static QDQ over every op destroys attention's accuracy). The measurements
behind them are in benchmarks/README.md (INT8 on ort-cpu)."""
from __future__ import annotations

import time
from pathlib import Path

from prune2deploy.backends.onnx.graph import is_transformer

TRANSFORMER_OPS = ["MatMul", "Gemm"]


class _Feeds:
    """onnxruntime's CalibrationDataReader over p2d's calibration feeds."""

    def __init__(self, feeds: list[dict], names: list[str]):
        self._it = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # newer onnxruntime calls it between calibration passes
        pass


def quantize_int8(onnx_path: Path, out_path: Path, calib_feeds: list[dict]) -> dict:
    import onnxruntime
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    start = time.perf_counter()
    transformer = is_transformer(onnx_path)
    if transformer:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=TRANSFORMER_OPS)
        how = {"method": "dynamic", "ops": TRANSFORMER_OPS, "weights": "QInt8 per channel",
               "activations": "QUInt8, quantized at run time"}
    else:
        names = [i.name for i in onnxruntime.InferenceSession(str(onnx_path),
                                                              providers=["CPUExecutionProvider"]).get_inputs()]
        quantize_static(str(onnx_path), str(out_path), _Feeds(calib_feeds, names), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
        how = {"method": "static", "format": "QDQ", "weights": "QInt8 per channel", "activations": "QUInt8",
               "calibration_feeds": len(calib_feeds)}
    return {"onnx": out_path.name, "precision": "int8", "quantizer": f"onnxruntime {onnxruntime.__version__}",
            "model_type": "transformer" if transformer else "default", **how,
            "seconds": round(time.perf_counter() - start, 2)}
