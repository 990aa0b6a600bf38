"""The verified FP32 ONNX as OpenVINO IR at the deployed precision: FP32 weights for fp32/bf16 (the CPU plugin
runs BF16 through the inference-precision hint), and INT8 through NNCF's post-training quantization on the
calibration feeds (model type transformer when the graph has attention's Softmax)."""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from prune2deploy.backends.onnx.graph import is_transformer


def write_ir(onnx_path: Path, xml_path: Path, precision: str, calib_feeds: list[dict]) -> dict:
    """Write `xml_path` (+ .bin); returns what was done (for the report)."""
    import openvino as ov

    start = time.perf_counter()
    model = ov.convert_model(str(onnx_path))
    record = {"ir": xml_path.name, "precision": precision}
    if precision == "int8":
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)

        transformer = is_transformer(onnx_path)
        names = [i.get_any_name() for i in model.inputs]
        dataset = nncf.Dataset(calib_feeds, lambda feed: {k: v for k, v in feed.items() if k in names})
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars print to stdout: p2d's is --json's
            model = nncf.quantize(model, dataset, subset_size=len(calib_feeds),
                                  model_type=nncf.ModelType.TRANSFORMER if transformer else None)
        record.update({"quantizer": f"nncf {nncf.__version__}", "model_type": "transformer" if transformer else "default",
                       "calibration_feeds": len(calib_feeds)})
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record
