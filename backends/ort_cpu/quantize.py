"""ort-cpu INT8 through onnxruntime.quantization, with the settings that are fast and accurate on x86 rather
than the API's defaults: unsigned (QUInt8) activations, so the u8 x s8 VNNI kernels run instead of the slow
signed-activation path; per-channel signed weights; static calibration for CNNs; dynamic quantization of
MatMul/Gemm only for transformers (static QDQ over every op destroys attention's accuracy). The measurements
behind them are in benchmarks/README.md (INT8 on ort-cpu).

With an accuracy floor (--max-drop) a measured per-layer exclusion puts the most sensitive layers back in FP32:
each unit (a Conv/MatMul/Gemm with the nodes between it and the compute ops that feed it: onnxruntime quantizes
tensors, so the outlier tensor stays INT8 until its producer is excluded too) is left out once and the drop
measured; units then go back in order of what they recovered until the artifact fits."""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from prune2deploy.backends.onnx.graph import is_transformer, without_value_info

TRANSFORMER_OPS = ["MatMul", "Gemm"]
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
LEAVE_ONE_OUT_SECONDS = 300.0  # the per-unit measurements stop here; the greedy exclusion then uses what it has


class Feeds:
    """onnxruntime's CalibrationDataReader over p2d's calibration feeds."""

    def __init__(self, feeds: list[dict], names: list[str]):
        self._it = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # newer onnxruntime calls it between calibration passes
        pass


def quantize_int8(onnx_path: Path, out_path: Path, calib_feeds: list[dict], floor=None, name: str = "pruned",
                  threads: int | None = None) -> dict:
    """INT8 ONNX at `out_path`; with `floor` (precision.floor.AccuracyFloor) layers go back to FP32 until the
    artifact's validation metric fits it (or every unit is back: then the best found, `fits` False)."""
    start = time.perf_counter()
    record = _quantize(onnx_path, out_path, calib_feeds, [])
    if floor is not None:
        record["fallback"] = _fall_back(onnx_path, out_path, calib_feeds, floor, name, threads)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization warns on the root logger ("consider pre-processing") on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def run_quantizer(quantize, onnx_path: Path, out_path: Path):
    """`quantize(src, out_path)` (an onnxruntime.quantization call) quietly; when its strict shape inference
    rejects annotations an exporter left stale, again on a copy of `onnx_path` without them."""
    from onnx.shape_inference import InferenceError

    with _quiet_root_logger():
        try:
            return quantize(onnx_path, out_path)
        except InferenceError:
            src = without_value_info(onnx_path, out_path.with_name(out_path.stem + ".src.onnx"))
            try:
                return quantize(src, out_path)
            finally:
                for leftover in (src, src.with_name(src.name + ".data")):
                    leftover.unlink(missing_ok=True)


def _quantize(onnx_path: Path, out_path: Path, calib_feeds: list[dict], exclude: list[str]) -> dict:
    return run_quantizer(lambda src, out: _quantize_loud(src, out, calib_feeds, exclude), onnx_path, out_path)


def _quantize_loud(onnx_path: Path, out_path: Path, calib_feeds: list[dict], exclude: list[str]) -> dict:
    import onnxruntime
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    transformer = is_transformer(onnx_path)
    if transformer:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=TRANSFORMER_OPS, nodes_to_exclude=exclude)
        how = {"method": "dynamic", "ops": TRANSFORMER_OPS, "weights": "QInt8 per channel",
               "activations": "QUInt8, quantized at run time"}
    else:
        names = [i.name for i in onnxruntime.InferenceSession(str(onnx_path),
                                                              providers=["CPUExecutionProvider"]).get_inputs()]
        quantize_static(str(onnx_path), str(out_path), Feeds(calib_feeds, names), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
        how = {"method": "static", "format": "QDQ", "weights": "QInt8 per channel", "activations": "QUInt8",
               "calibration_feeds": len(calib_feeds)}
    return {"onnx": out_path.name, "precision": "int8", "quantizer": f"onnxruntime {onnxruntime.__version__}",
            "model_type": "transformer" if transformer else "default", **how}


def exclusion_units(onnx_path: Path) -> dict[str, list[str]]:
    """Compute node -> the nodes to exclude with it: itself and, for static QDQ, every node on the way back to
    the compute nodes (or graph inputs) that feed it. Transformers (dynamic, MatMul/Gemm only): itself."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    compute = [n for n in graph.node if n.op_type in COMPUTE_OPS and n.name]
    if is_transformer(onnx_path):
        return {n.name: [n.name] for n in compute if n.op_type in TRANSFORMER_OPS}
    units = {}
    for node in compute:
        unit, todo, seen = [node.name], list(node.input[:1]), set()
        while todo:
            tensor = todo.pop()
            parent = producer.get(tensor)
            if parent is None or tensor in seen:
                continue
            seen.add(tensor)
            if parent.name:
                unit.append(parent.name)
            if parent.op_type not in COMPUTE_OPS:
                todo.extend(parent.input)
        units[node.name] = list(dict.fromkeys(unit))
    return units


def _fall_back(onnx_path: Path, out_path: Path, calib_feeds: list[dict], floor, name: str, threads) -> dict:
    """Leave each unit out once (measured), then exclude units greedily by what they recovered until it fits."""
    from prune2deploy.backends.ort_cpu.runner import OrtRunner

    def measure(exclude: list[str]) -> float:
        _quantize(onnx_path, out_path, calib_feeds, exclude)
        return floor.measure(OrtRunner(out_path, threads))

    start = time.perf_counter()
    value = floor.measure(OrtRunner(out_path, threads))
    record = {"method": "measured per-layer exclusion (onnxruntime nodes_to_exclude)", "max_drop": floor.max_drop,
              "int8_drop": floor.drop(value), "excluded": [], "evaluations": 1}
    if floor.fits(value):
        return {**record, "drop": floor.drop(value), "fits": True, "seconds": round(time.perf_counter() - start, 2)}
    if floor.budget(name) < 0:  # its FP32 model is already below the floor: no layer in FP32 can fix that
        return {**record, "drop": floor.drop(value), "fits": False, "note": "the FP32 model itself is below the floor",
                "seconds": round(time.perf_counter() - start, 2)}
    units, gains = exclusion_units(onnx_path), {}
    for unit, nodes in units.items():
        if time.perf_counter() - start > LEAVE_ONE_OUT_SECONDS:
            record["leave_one_out_stopped"] = f"after {len(gains)} of {len(units)} units ({LEAVE_ONE_OUT_SECONDS:g} s)"
            break
        gains[unit] = measure(nodes) - value
        record["evaluations"] += 1
    best = (floor.drop(value), [], [])  # (drop, units, nodes) of the best artifact so far
    chosen: list[str] = []
    for unit in sorted(gains, key=gains.get, reverse=True):
        chosen.append(unit)
        nodes = list(dict.fromkeys(n for u in chosen for n in units[u]))
        value = measure(nodes)
        record["evaluations"] += 1
        if floor.drop(value) < best[0]:
            best = (floor.drop(value), list(chosen), nodes)
        if floor.fits(value):
            break
    if not floor.fits(value) and best[1] != chosen:  # nothing fits: write the best artifact found again
        value = measure(best[2])
        record["evaluations"] += 1
    record.update(drop=floor.drop(value), fits=floor.fits(value), excluded=best[1] if not floor.fits(value) else chosen,
                  seconds=round(time.perf_counter() - start, 2))
    return record
