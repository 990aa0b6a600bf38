"""torch -> ONNX: export, onnx.checker, shape inference, and onnxslim where it removes nodes; large models
stream their weights to external data (LARGE_MODEL_BYTES)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import torch

from prune2deploy.errors import P2DError, UserError
from prune2deploy.model.outputs import flatten_outputs
from prune2deploy.runtime.peak_memory import return_freed_memory

DEFAULT_OPSET = 18
PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2  # leave headroom under protobuf's 2 GB
# From this many bytes of weights (ResNet-50 is 102 MB, ViT-B/16 346 MB) a model takes the large-model path:
# the dynamo exporter streams its weights to <name>.onnx.data and onnxslim is skipped. Measured on ViT-B/16
# (benchmarks/results/scale.md): TorchScript export peaks 1.2 GB above the start, dynamo writing external
# data 0.1 GB; onnxslim peaks 3.0 GB above its input and removes 12 of dynamo's 524 nodes.
LARGE_MODEL_BYTES = 128 * 1024**2
EXPORTERS = ("auto", "torchscript", "dynamo")


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (what ONNX stores as initializers)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def takes_large_model_path(model: torch.nn.Module) -> bool:
    """Whether `exporter="auto"` streams this model's weights to external data with dynamo."""
    return weight_bytes(model) >= LARGE_MODEL_BYTES


SLIM_MAX_WEIGHT_BYTES = 256 * 1024**2  # larger models are not slimmed (VGG-11's dense export: 3.4 GB with it)


def export_onnx(model: torch.nn.Module, inputs, path: Path, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", slim: bool = True, dynamic_batch: bool = False,
                large: bool | None = None) -> dict:
    """Write `model` to `path` as checked, shape-inferred ONNX; returns a record of what was done.

    `exporter="auto"`: dynamo with external data for models of LARGE_MODEL_BYTES and more (falling back
    to TorchScript if dynamo fails), TorchScript below. Weights go to `<name>.onnx.data` on the large-model
    path and past protobuf's 2 GB limit; the file is checked on disk, never re-serialized in memory.
    `large` overrides the size test (a compile decides once, from the dense model, for all its variants).
    """
    path = Path(path)
    size = weight_bytes(model)
    large = takes_large_model_path(model) if large is None else large
    with torch.no_grad():
        output_names = [n for n, _ in flatten_outputs(inputs.call(model))]
    chosen = exporter if exporter != "auto" else ("dynamo" if large else "torchscript")
    record = {"exporter": chosen, "opset": opset, "dynamic_batch": dynamic_batch, "weight_bytes": size}
    _data_file(path).unlink(missing_ok=True)
    staging = path.parent / f".{path.name}.export"  # the exporter's own files, until they are in place
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        exported = staging / path.name
        try:
            _run_exporter(model, inputs, exported, opset, chosen, output_names, dynamic_batch,
                          external_data=large or size > PROTOBUF_LIMIT)
        except P2DError as exc:
            if exporter != "auto" or chosen != "dynamo":
                raise
            record["exporter"], record["fallback"] = "torchscript", str(exc)
            _run_exporter(model, inputs, exported, opset, "torchscript", output_names, dynamic_batch)
        if record["exporter"] == "dynamo" and _data_file(exported).exists():
            record.update(_move_streamed(exported, path))
        else:
            record.update(_rewrite(exported, path, slim and not large))
            if slim and large:
                record["onnxslim"] = {"applied": False, "skipped": "large model: onnxslim held ~9x the weights (ViT-B/16)"}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    check_onnx(path)
    record["external_data"] = _data_file(path).exists()
    return record


def _data_file(path: Path) -> Path:
    return path.parent / (path.name + ".data")


def _move_streamed(exported: Path, path: Path) -> dict:
    """dynamo wrote the weights to <name>.onnx.data beside the graph: move both, count nodes without the data."""
    import onnx

    os.replace(_data_file(exported), _data_file(path))
    os.replace(exported, path)
    proto = onnx.load(str(path), load_external_data=False)
    nodes = len(proto.graph.node)
    return {"nodes_exported": nodes, "nodes": nodes, "inputs": [i.name for i in proto.graph.input],
            "outputs": [o.name for o in proto.graph.output],
            "onnxslim": {"applied": False, "skipped": "large model: its weights stay in external data"}}


def _rewrite(exported: Path, path: Path, slim: bool) -> dict:
    """Load the exported file, onnxslim it where that removes nodes, save it (external data past 2 GB)."""
    import onnx

    proto = onnx.load(str(exported))
    nodes_exported = len(proto.graph.node)
    record = {"nodes_exported": nodes_exported, "inputs": [i.name for i in proto.graph.input],
              "outputs": [o.name for o in proto.graph.output]}
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    if slim and weight_bytes > SLIM_MAX_WEIGHT_BYTES:
        record["onnxslim"] = {"applied": False, "reason": f"weights of {weight_bytes / 1024**2:.0f} MB: onnxslim "
                              "holds three copies of them; skipped to bound memory (the runtimes optimise "
                              "the graph themselves)"}
    elif slim:
        slimmed = _slim(proto)
        record["onnxslim"] = {"nodes_before": nodes_exported,
                              "nodes_after": len(slimmed.graph.node) if slimmed is not None else None}
        record["onnxslim"]["applied"] = slimmed is not None and len(slimmed.graph.node) < nodes_exported
        if record["onnxslim"]["applied"]:
            proto = slimmed
        del slimmed
    save_onnx(proto, path)
    record["nodes"] = len(proto.graph.node)
    del proto  # check_onnx loads the file again
    return_freed_memory()  # the pruned model's export would otherwise count this heap against --max-memory-gb
    return record


def _run_exporter(model, inputs, path: Path, opset: int, exporter: str, output_names: list[str],
                  dynamic_batch: bool = False, external_data: bool = False) -> None:
    """torch.onnx.export; dynamo with `external_data` streams the weights to <name>.onnx.data."""
    kwargs = dict(input_names=inputs.names, output_names=output_names, opset_version=opset,
                  dynamo=exporter == "dynamo")
    if exporter == "dynamo":
        kwargs["external_data"] = external_data
    if dynamic_batch:  # axis 0 of every input and output is the batch
        kwargs["dynamic_axes"] = {name: {0: "batch"} for name in inputs.names + output_names}
    if exporter == "torchscript":
        kwargs["do_constant_folding"] = True
    args = tuple(inputs.tensors())
    was_training = model.training
    if inputs.kwargs:  # positional wrapper: exporters bind keyword inputs unreliably (e.g. transformers)
        model = _KeywordCall(model, inputs.names).train(was_training)
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _no_native_stdout(), _no_mha_fastpath():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), **kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        unsupported = re.search(r"Unsupported: ONNX export of operator (\w+)(, [^.]*)?", first)
        if unsupported:  # a limitation of ONNX for this model at this shape, not a p2d failure
            what = unsupported.group(0).removeprefix("Unsupported: ONNX export of ")
            raise UserError(f"ONNX cannot express this model's {what} (torch.onnx.export, {exporter})",
                            "an --input-shape the layer supports (adaptive pooling: a multiple of its output "
                            "size, e.g. 224 for torchvision AlexNet/VGG), --exporter dynamo, or another --opset") \
                from exc
        raise P2DError(f"torch.onnx.export ({exporter}) failed: {first[:300]}",
                       "try --exporter dynamo or torchscript, or --opset another version") from exc
    finally:
        model.train(was_training)  # the exporter restores the mode of the module it was given


class _KeywordCall(torch.nn.Module):
    """Calls the wrapped model with keyword inputs taken positionally, and returns its flat outputs."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        return tuple(t for _, t in flatten_outputs(self.model(**dict(zip(self.names, args)))))


@contextlib.contextmanager
def _no_native_stdout():
    """The TorchScript exporter prints its whole IR graph from C++ when an operator is unsupported."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.TransformerEncoderLayer's inference fast path is a fused op ONNX cannot express."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def _slim(proto):
    """onnxslim's graph clean-up (constant folding, dead nodes, fusions); None if it fails."""
    try:
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxslim.slim(proto)
    except Exception:
        return None


def save_onnx(proto, path: Path) -> None:
    """Save, moving weights to `<name>.data` when the model would exceed protobuf's 2 GB limit."""
    import onnx

    stored = sum(len(t.raw_data) for t in proto.graph.initializer)
    data_file = _data_file(path)
    data_file.unlink(missing_ok=True)
    if stored > PROTOBUF_LIMIT:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file.name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


def check_onnx(path: Path) -> None:
    """onnx.checker (full) and strict shape inference on the file on disk."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise P2DError(f"{Path(path).name} fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc


def onnx_bytes(path: Path) -> int:
    """Size of the model file plus its external data, if any."""
    path = Path(path)
    data = path.parent / (path.name + ".data")
    return os.path.getsize(path) + (os.path.getsize(data) if data.exists() else 0)
