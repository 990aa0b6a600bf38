"""Check, from the exported ONNX initializers, that layers reported N:M still hold the pattern.

TensorRT reads the pattern along the weight's reduction axis: Conv W[K, C, R, S] axis 1,
MatMul B[in, out] axis 0, Gemm B axis 0 (axis 1 when transB=1).

Mapping a report layer (torch module name) to its initializer, first match wins:
  1. name: an initializer called "<layer>.weight" feeding a Conv/MatMul/Gemm weight slot
     (TorchScript exporter for un-fused layers; dynamo exporter for all parameters);
  2. scope: the node's module scope, from the TorchScript node name "/a/a.0/Conv" or the
     dynamo "namespace" metadata, rebuilt into the qualified name "a.0"
     (covers "onnx::MatMul_12" transposed Linear weights and BatchNorm-folded convs);
  3. value: with `model` given, the initializer equal to the layer's weight in the slot's
     layout (its transpose for MatMul / Gemm without transB).
Weight slots are followed back through Transpose / Cast / Identity nodes to the stored
tensor; FP16 and external-data initializers are read as numpy arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from prune2deploy.errors import UserError, VerificationError
from prune2deploy.passes.nm import holds_nm

WEIGHT_AXIS = {"Conv": 1, "MatMul": 0}  # Gemm: depends on transB
PASS_THROUGH = {"Cast", "Identity"}


@dataclass
class WeightSlot:
    """A stored weight tensor and the axis TensorRT reduces over, as one node reads it."""

    node: onnx.NodeProto
    initializer: str
    axis: int  # in the stored tensor's layout


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _load(onnx_path_or_model) -> tuple[onnx.ModelProto, str | None]:
    if isinstance(onnx_path_or_model, onnx.ModelProto):
        return onnx_path_or_model, None
    path = os.fspath(onnx_path_or_model)
    if not os.path.exists(path):
        raise UserError(f"ONNX file {path} not found")
    return onnx.load(path, load_external_data=True), os.path.dirname(os.path.abspath(path))


def _stored_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and _attr(node, "value") is not None:
            tensors[node.output[0]] = _attr(node, "value")
    return tensors


def weight_slots(graph: onnx.GraphProto) -> list[WeightSlot]:
    """Every Conv/MatMul/Gemm whose weight input (1) traces back to a stored tensor."""
    tensors = _stored_tensors(graph)
    producer = {out: node for node in graph.node for out in node.output}
    slots = []
    for node in graph.node:
        if node.op_type == "Gemm":
            axis = 1 if _attr(node, "transB", 0) else 0
        elif node.op_type in WEIGHT_AXIS:
            axis = WEIGHT_AXIS[node.op_type]
        else:
            continue
        if len(node.input) < 2:
            continue
        name, perms = node.input[1], []
        while name not in tensors and name in producer:
            upstream = producer[name]
            if upstream.op_type == "Transpose":
                perms.append(_attr(upstream, "perm"))
            elif upstream.op_type not in PASS_THROUGH:
                break
            name = upstream.input[0]
        if name in tensors:
            rank = len(tensors[name].dims)
            for perm in perms:  # output axis a of a Transpose is its input axis perm[a]
                axis = list(perm or reversed(range(rank)))[axis]
            slots.append(WeightSlot(node, name, axis))
    return slots


def _scope_name(node: onnx.NodeProto) -> str | None:
    """Qualified torch module name of the node's scope, or None if it carries none."""
    metadata = {p.key: p.value for p in node.metadata_props}
    if "namespace" in metadata:  # dynamo: ": Net/features: Seq/features.3: Conv2d/conv2d_1: aten..."
        parts = [level.split(":")[0].strip() for level in metadata["namespace"].split("/")]
    elif node.name.startswith("/"):  # TorchScript: "/features/features.3/Conv"
        parts = node.name.split("/")
    else:
        return None
    qualified = ""
    for part in [p for p in parts[:-1] if p]:  # the last level is the op itself
        last = qualified.rsplit(".", 1)[-1]
        if not qualified or part.startswith(qualified + "."):  # dynamo: levels are fully qualified
            qualified = part
        elif part.startswith(last + "."):  # TorchScript: "shortcut" then "shortcut.0"
            qualified += part[len(last):]
        else:
            qualified = f"{qualified}.{part}"
    return qualified or None


def _as_torch_layout(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, axis, 1)


def _equal_weight(array: np.ndarray, axis: int, weight: torch.Tensor) -> bool:
    stored = _as_torch_layout(array, axis).astype(np.float32)
    expected = weight.detach().cpu().float().numpy().astype(array.dtype).astype(np.float32)
    return stored.shape == expected.shape and np.allclose(stored, expected, rtol=1e-3, atol=0.0)


def check_onnx_nm(onnx_path_or_model, claimed: list[dict], n: int, m: int,
                  model: nn.Module | None = None) -> list[dict]:
    """Per claimed layer: {name, initializer, axis, holds, match}; holds=False when not found."""
    proto, base_dir = _load(onnx_path_or_model)
    slots = weight_slots(proto.graph)
    tensors = _stored_tensors(proto.graph)
    arrays: dict[str, np.ndarray] = {}

    def array_of(slot: WeightSlot) -> np.ndarray:
        if slot.initializer not in arrays:
            arrays[slot.initializer] = numpy_helper.to_array(tensors[slot.initializer], base_dir or "")
        return arrays[slot.initializer]

    modules = dict(model.named_modules()) if model is not None else {}
    results = []
    for layer in claimed:
        name = layer["name"]
        found, how = None, None
        for slot in slots:
            if slot.initializer == f"{name}.weight":
                found, how = slot, "name"
                break
        if found is None:
            found = next((s for s in slots if _scope_name(s.node) == name), None)
            how = "scope" if found else None
        weight = layer.get("weight", getattr(modules.get(name), "weight", None))
        if found is None and weight is not None:
            found = next((s for s in slots if _equal_weight(array_of(s), s.axis, weight)), None)
            how = "value" if found else None
        if found is None:
            results.append({"name": name, "initializer": None, "axis": None, "holds": False, "match": None,
                            "reason": "no Conv/MatMul/Gemm weight in the ONNX graph matches this layer"})
            continue
        array = array_of(found)
        holds = holds_nm(torch.from_numpy(array.astype(np.float32)), n, m, axis=found.axis)
        results.append({"name": name, "initializer": found.initializer, "axis": found.axis,
                        "holds": holds, "match": how})
    return results


def assert_onnx_nm(onnx_path_or_model, claimed: list[dict], n: int, m: int,
                   model: nn.Module | None = None) -> list[dict]:
    """check_onnx_nm, raising VerificationError naming the first layer that lost the pattern."""
    results = check_onnx_nm(onnx_path_or_model, claimed, n, m, model=model)
    for result in results:
        if not result["holds"]:
            where = (f"initializer {result['initializer']!r}, axis {result['axis']}" if result["initializer"]
                     else result["reason"])
            raise VerificationError(
                f"layer {result['name']!r} does not hold {n}:{m} sparsity in the ONNX file ({where})",
                hint="a pass after sparsity or the exporter rewrote this weight; re-run sparsity last")
    return results
