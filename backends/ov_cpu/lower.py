"""The verified FP32 ONNX as OpenVINO IR at the deployed precision: FP32 weights for fp32/bf16 (the CPU plugin
runs BF16 through the inference-precision hint), and INT8 through NNCF's post-training quantization on the
calibration feeds (model type transformer when the graph has attention's Softmax). With an accuracy floor
(--max-drop), NNCF's accuracy control puts the most sensitive layers back in FP32 until the validation metric,
measured on the compiled model, fits."""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from prune2deploy.backends.onnx.graph import is_transformer


MAX_REVERTED = 50  # NNCF accuracy control: layers it may put back in FP32 (one validation each)


def write_ir(onnx_path: Path, xml_path: Path, precision: str, calib_feeds: list[dict], floor=None,
             name: str = "pruned", threads: int | None = None) -> dict:
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
        model_type = nncf.ModelType.TRANSFORMER if transformer else None
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars print to stdout: p2d's is --json's
            if floor is None:
                model = nncf.quantize(model, dataset, subset_size=len(calib_feeds), model_type=model_type)
            else:
                model, record["fallback"] = _with_accuracy_control(model, dataset, len(calib_feeds), model_type,
                                                                   floor, name, threads)
        record.update({"quantizer": f"nncf {nncf.__version__}", "model_type": "transformer" if transformer else "default",
                       "calibration_feeds": len(calib_feeds)})
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


class _Compiled:
    """An ov.CompiledModel as a runner (`run(feed) -> outputs`) for the metric."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.names = [i.get_any_name() for i in compiled.inputs]

    def run(self, feed):
        import numpy as np

        result = self.compiled({k: v for k, v in feed.items() if k in self.names})
        return [np.array(result[out]) for out in self.compiled.outputs]


def _with_accuracy_control(model, dataset, subset_size: int, model_type, floor, name: str, threads):
    """nncf.quantize_with_accuracy_control with the floor's budget for `name`; returns (model, record). NNCF logs
    the layers it reverts rather than returning them: a handler on its logger collects them."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    budget = floor.budget(name)
    record = {"method": f"NNCF accuracy control (nncf {nncf.__version__})", "max_drop": floor.max_drop,
              "budget_vs_own_fp32": budget}
    start = time.perf_counter()
    if budget < 0:  # its FP32 model is already below the floor: quantizing cannot fix that
        model = nncf.quantize(model, dataset, subset_size=subset_size, model_type=model_type)
        record.update(excluded=[], note="the FP32 model itself is below the floor")
    else:
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda rec: lines.append(rec.getMessage())
        logger = logging.getLogger("nncf")
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            model = nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(floor.val), lambda compiled, items: floor.per_batch(_Compiled(compiled),
                                                                                                 list(items)),
                max_drop=budget, drop_type=nncf.DropType.ABSOLUTE, subset_size=subset_size, model_type=model_type,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=MAX_REVERTED))
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        record["excluded"] = _reverted(lines)
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      **({"INFERENCE_NUM_THREADS": threads} if threads else {})})
    value = floor.measure(_Compiled(compiled))
    record.update(drop=floor.drop(value), fits=floor.fits(value), seconds=round(time.perf_counter() - start, 2))
    return model, record


def _reverted(lines: list[str]) -> list[str]:
    """The layer names NNCF's accuracy control logged as reverted to FP32 (tab-indented after the header)."""
    names = []
    for line in lines:
        if "reverted back" in line:
            names += [part.strip() for part in line.splitlines()[1:] if part.strip()]
    return names
