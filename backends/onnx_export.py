"""torch -> ONNX: export, onnx.checker, shape inference, and onnxslim where it removes nodes."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from pathlib import Path

import torch

from prune2deploy.errors import P2DError, UserError
from prune2deploy.outputs import flatten_outputs

DEFAULT_OPSET = 18
PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2  # leave headroom under protobuf's 2 GB
SLIM_MAX_WEIGHT_BYTES = 256 * 1024**2  # larger models are not slimmed (VGG-11's dense export: 3.4 GB with it)


def export_onnx(model: torch.nn.Module, inputs, path: Path, opset: int = DEFAULT_OPSET,
                exporter: str = "torchscript", slim: bool = True, dynamic_batch: bool = False) -> dict:
    """Write `model` to `path` as checked, shape-inferred ONNX; returns a record of what was done."""
    import onnx

    path = Path(path)
    with torch.no_grad():
        output_names = [n for n, _ in flatten_outputs(inputs.call(model))]
    _run_exporter(model, inputs, path, opset, exporter, output_names, dynamic_batch)
    proto = onnx.load(str(path))
    nodes_exported = len(proto.graph.node)
    record = {"exporter": exporter, "opset": opset, "nodes_exported": nodes_exported, "dynamic_batch": dynamic_batch,
              "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output]}
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    if slim and weight_bytes > SLIM_MAX_WEIGHT_BYTES:
        record["onnxslim"] = {"applied": False, "reason": f"weights of {weight_bytes / 1024**2:.0f} MB: onnxslim "
                              "holds three copies of them; skipped to bound memory (the runtimes optimise "
                              "the graph themselves)"}
    elif slim:
        slimmed = _slim(proto)
        record["onnxslim"] = {"nodes_before": nodes_exported,
                              "nodes_after": len(slimmed.graph.node) if slimmed is not None else None}
        if slimmed is not None and len(slimmed.graph.node) < nodes_exported:
            proto = slimmed
            record["onnxslim"]["applied"] = True
        else:
            record["onnxslim"]["applied"] = False
        del slimmed
    save_onnx(proto, path)
    record["nodes"] = len(proto.graph.node)
    del proto  # check_onnx loads the file again
    check_onnx(path)
    _return_freed_memory()
    record["external_data"] = (path.parent / (path.name + ".data")).exists()
    return record


def _run_exporter(model, inputs, path: Path, opset: int, exporter: str, output_names: list[str],
                  dynamic_batch: bool = False) -> None:
    kwargs = dict(input_names=inputs.names, output_names=output_names, opset_version=opset,
                  dynamo=exporter == "dynamo")
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


def _return_freed_memory() -> None:
    """Hand the export's freed heap back to the OS (glibc keeps it otherwise, and the next export, the
    pruned model's, would count it against --max-memory-gb: Swin-V2-T went over 3 GB that way)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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

    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    data_file = path.parent / (path.name + ".data")
    if data_file.exists():
        data_file.unlink()
    if weight_bytes > PROTOBUF_LIMIT:
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
