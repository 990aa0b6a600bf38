"""--data / --val-data / --calib-data: the user's real samples as (inputs, labels) batches, checked against the model.

Forms: `FILE.pt` (a tensor, `(inputs, labels)` or `{"inputs": ..., "labels": ...}`; weights-only unpickling),
`FILE.npz` (arrays `inputs` and optionally `labels`; pickles refused), `module:callable` / `file.py:callable`
(returns a Dataset, a DataLoader or a finite iterable of batches), `text:FILE` (data_text.py), `images:DIR`
(data_images.py). Anything wrong is a UserError naming the flag and the spec: among it samples that hold NaN or
Inf (the first one named), and image-like samples (rank-4 float) of another height and width than the example
input's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.errors import UserError, user_error
from prune2deploy.model.outputs import flatten_outputs
from prune2deploy.data.samples import Batch, Samples, stacked


_NAMES = {"--data": "data", "--val-data": "validation data", "--calib-data": "calibration data"}
_FORMS = "FILE.pt, FILE.npz, module:callable, file.py:callable, text:FILE or images:DIR"


def load_data(spec: str, model: nn.Module, example: ExampleInputs, options, *, what: str = "--data") -> list[Batch]:
    """All of `spec` in its own order, as batches of options.batch_size, checked against `model`."""
    samples = read_samples(spec, model, example, options, what)
    return _checked(batches_of(samples, list(range(samples.n)), options.batch_size), model, example, spec, what)


def train_val_batches(options, model: nn.Module, example: ExampleInputs) -> tuple[list[Batch], list[Batch], dict]:
    """(train, val, description): --data shuffled (seeded); without --val-data a --val-split fraction of it is
    held out and never trained on. ([], [], {}) when neither --data nor --val-data is given."""
    if options.data is None and options.val_data is None:
        return [], [], {}
    train, val, held_out = [], [], None
    if options.data is not None:
        samples = read_samples(options.data, model, example, options, "--data")
        order = torch.randperm(samples.n, generator=torch.Generator().manual_seed(options.seed)).tolist()
        if options.val_data is None and options.val_split > 0:
            held_out = max(1, round(samples.n * options.val_split))
            if held_out >= samples.n:
                raise user_error(f"--data {options.data}: {samples.n} {samples.unit}(s) cannot be split into "
                                 f"training and validation with --val-split {options.val_split:g}",
                                 "give more data, a smaller --val-split, or --val-data")
            val = _checked(batches_of(samples, sorted(order[:held_out]), options.batch_size), model, example,
                           options.data, "--data")
            order = order[held_out:]
        train = _checked(batches_of(samples, order, options.batch_size), model, example, options.data, "--data")
    if options.val_data is not None:
        val = load_data(options.val_data, model, example, options, what="--val-data")
    description = {"data": options.data, "val_data": options.val_data,
                   "val_split": options.val_split if held_out else None, "seed": options.seed,
                   "train_samples": count_samples(train), "val_samples": count_samples(val),
                   "labels": bool(val or train) and all(y is not None for _, y in (val or train))}
    return train, val, description


def count_samples(batches: list[Batch]) -> int:
    return sum(int(inputs.tensors()[0].shape[0]) for inputs, _ in batches)


LENGTH_GROUP = 50  # batches per length-sorted group (as transformers' group_by_length)


def batches_of(samples: Samples, order: list[int], batch_size: int) -> list[Batch]:
    if samples.unit == "batch":
        return [samples.take([i]) for i in order]
    if samples.lengths is not None:
        order = grouped_by_length(order, samples.lengths, batch_size)
    return [samples.take(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def grouped_by_length(order: list[int], lengths: Sequence[int], batch_size: int) -> list[int]:
    """`order` cut into groups of LENGTH_GROUP batches, each sorted by length (longest first): a batch pads to
    its longest sentence, so similar lengths together halve the padded tokens of random batches of real text.
    Which samples meet in a group still follows `order` (seeded); recovery shuffles the batches every epoch."""
    group = LENGTH_GROUP * batch_size
    return [i for start in range(0, len(order), group)
            for i in sorted(order[start:start + group], key=lambda i: -lengths[i])]


def read_samples(spec: str, model: nn.Module, example: ExampleInputs, options, what: str) -> Samples:
    """Dispatch on the form of `spec`; the result is not yet checked against the model."""
    from prune2deploy.model.loading import looks_like_callable

    spec = str(spec)
    if spec.startswith("text:"):
        from prune2deploy.data.text import read_text

        samples = read_text(Path(spec[5:]), model, example, options, what)
    elif spec.startswith("images:"):
        from prune2deploy.data.images import read_images

        samples = read_images(Path(spec[7:]), example, options, what)
    elif spec.endswith(".pt") or spec.endswith(".npz"):
        samples = _read_file(Path(spec), example, what)
    elif looks_like_callable(spec):
        samples = _read_callable(spec, example, options, what)
    else:
        raise user_error(f"{what} {spec}: not a data form p2d reads", f"use {_FORMS}")
    if samples.n == 0:
        raise user_error(f"{what} {spec} is empty", "give at least one sample")
    if not spec.startswith("images:"):  # images are resized to the input's size, or to the --image-size asked for
        _check_size(samples, example, spec, what)
    _refuse_nonfinite(samples, spec, what)
    return samples


CHECK_CHUNK = 1024  # samples per chunk of the finiteness scan


def _refuse_nonfinite(samples: Samples, spec: str, what: str) -> None:
    """Every float input of every sample must be finite: one NaN makes BatchNorm statistics, recovery and every
    metric NaN. Names the first bad sample (its index in the data's own order)."""
    if samples.lengths is not None:  # text: token ids, integers
        return
    step = 1 if samples.unit == "batch" else CHECK_CHUNK
    first_sample = 0  # index of the chunk's first sample
    for start in range(0, samples.n, step):
        inputs, _ = samples.take(range(start, min(start + step, samples.n)))
        for name, t in zip(inputs.names, inputs.tensors()):
            if not (t.dtype.is_floating_point or t.dtype.is_complex) or bool(torch.isfinite(t).all()):
                continue
            bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1)
            row = int(bad.nonzero()[0, 0])
            kind = "NaN" if bool(torch.isnan(t[row]).any()) else "Inf"
            batch = f" (row {row} of batch {start})" if samples.unit == "batch" else ""
            raise user_error(f"{what} {spec}: sample {first_sample + row}{batch} holds {kind} (input {name}, as "
                             f"{_dtype(t)}); p2d refuses data that is not finite",
                             "fix or drop that sample: NaN or Inf makes BatchNorm statistics, recovery and every "
                             "metric NaN")
        first_sample += int(inputs.tensors()[0].shape[0]) if inputs.tensors() else 0


def _check_size(samples: Samples, example: ExampleInputs, spec: str, what: str) -> None:
    """Image-like samples (rank-4 float, NCHW) must have the example input's height and width: the ONNX file is
    exported at that size, and data of another would train and measure the model at a size it is not deployed
    at. Data of several sizes (a callable's batches that could not be stacked) is taken as meant for a model
    that takes several sizes; token sequences (integers) may have any length."""
    if samples.unit == "batch":
        return
    inputs, _ = samples.take([0])
    for name, t, ref in zip(inputs.names, inputs.tensors(), example.tensors()):
        if ref.dim() == 4 and ref.dtype.is_floating_point and t.dim() == 4 and t.shape[2:] != ref.shape[2:]:
            size = f"{t.shape[2]}x{t.shape[3]}"
            wanted = f"{ref.shape[2]}x{ref.shape[3]}"
            raise user_error(f"{what} {spec}: input {name} has samples of shape {_shape(t[0])} (HxW {size}); "
                             f"the example input is {_shape(ref)} (HxW {wanted})",
                             f"resize the data to {wanted}, or give --input-shape "
                             f"{','.join(map(str, [ref.shape[0], *t.shape[1:]]))} if the model is deployed at "
                             f"{size}; images:DIR resizes a folder of images to the input's size, or to "
                             f"--image-size")


# --- files ---------------------------------------------------------------------------------------


def _read_file(path: Path, example: ExampleInputs, what: str) -> Samples:
    if not path.is_file():
        raise user_error(f"{_NAMES.get(what, 'data')} not found: {path} ({what})")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                if "inputs" not in arrays.files:
                    raise user_error(f"{what} {path} holds arrays {', '.join(arrays.files) or 'none'}",
                                     "save the arrays as inputs= and optionally labels= (np.savez)")
                obj = (arrays["inputs"], arrays["labels"]) if "labels" in arrays.files else arrays["inputs"]
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:
        from prune2deploy.model.loading import refused_pickle, why_unreadable

        hint = ("save a tensor, (inputs, labels) or {'inputs': ..., 'labels': ...} with torch.save, "
                "or arrays inputs/labels with np.savez")
        raise (refused_pickle(path, exc, what, hint)
               or user_error(f"cannot read {what} {path}: {why_unreadable(path, exc)}", hint)) from exc
    if isinstance(obj, dict) and "inputs" in obj:
        unknown = sorted(set(obj) - {"inputs", "labels"})
        if unknown:
            raise user_error(f"{what} {path}: unknown keys {', '.join(unknown)}", "use keys inputs and labels")
        obj = (obj["inputs"], obj["labels"]) if obj.get("labels") is not None else obj["inputs"]
    inputs, labels = as_batch(obj, example, f"{what} {path}")
    return stacked(inputs, labels)


# --- module:callable ---------------------------------------------------------------------------


def _read_callable(spec: str, example: ExampleInputs, options, what: str) -> Samples:
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    from prune2deploy.model.loading import import_callable

    found = import_callable(spec)
    name = spec.rpartition(":")[2]
    obj = found
    if callable(found) and not isinstance(found, (Dataset, DataLoader)):
        try:
            obj = found()
        except Exception as exc:
            raise user_error(f"{what} {spec}: {name}() raised {type(exc).__name__}: {_first_line(exc)}",
                             "call it in Python to see the traceback (or run p2d with --debug)") from exc
    if isinstance(obj, (Dataset, IterableDataset)) and not isinstance(obj, DataLoader):
        obj = DataLoader(obj, batch_size=options.batch_size, shuffle=False)
    if isinstance(obj, (torch.Tensor, np.ndarray, str, bytes, dict)) or not hasattr(obj, "__iter__"):
        raise user_error(f"{what} {spec}: {name} gave a {type(obj).__name__}",
                         "return a torch Dataset, a DataLoader or an iterable of batches")
    where = f"{what} {spec}"
    try:
        batches = [as_batch(b, example, where) for b in obj]
    except UserError:
        raise
    except Exception as exc:
        raise user_error(f"{where}: reading from {name} raised {type(exc).__name__}: {_first_line(exc)}",
                         "items must be tensors/arrays, (inputs, labels) or dicts of tensors") from exc
    return _stack_batches(batches)


def _stack_batches(batches: list[Batch]) -> Samples:
    """One tensor set when every batch has the same layout and sample shapes; else batch by batch."""
    if not batches:
        return Samples(0, lambda idx: None)
    first_inputs, first_labels = batches[0]
    layout = [(n, t.shape[1:], t.dtype) for n, t in zip(first_inputs.names, first_inputs.tensors())]
    same = all([(n, t.shape[1:], t.dtype) for n, t in zip(b.names, b.tensors())] == layout
               and (y is None) == (first_labels is None) for b, y in batches)
    if not same:
        return Samples(len(batches), lambda idx: batches[idx[0]], unit="batch")
    tensors = [torch.cat(parts) for parts in zip(*(b.tensors() for b, _ in batches))]
    labels = torch.cat([y for _, y in batches]) if first_labels is not None else None
    return stacked(first_inputs.like(tensors), labels)


# --- one batch in any shape -> (ExampleInputs, labels) -----------------------------------------


def as_batch(obj, example: ExampleInputs, where: str) -> Batch:
    """A tensor/array, a tuple of them, a dict of them (keyword inputs; a `labels` key is the labels),
    or any of these followed by labels; converted to the example's layout and dtypes."""
    labels = None
    if isinstance(obj, dict):
        obj = dict(obj)
        labels = obj.pop("labels", obj.pop("label", None))
        inputs = ExampleInputs((), {str(k): _tensor(v, where) for k, v in obj.items()})
    else:
        parts = list(obj) if isinstance(obj, (tuple, list)) else [obj]
        wanted = len(example.tensors()) if not example.kwargs else 1
        if len(parts) == 2 and isinstance(parts[0], (tuple, list, dict)):  # (inputs, labels)
            parts, labels = parts[:1], parts[1]
        elif len(parts) == wanted + 1:
            parts, labels = parts[:-1], parts[-1]
        if len(parts) == 1 and isinstance(parts[0], dict):
            inputs, _ = as_batch(parts[0], example, where)
        elif len(parts) == 1 and isinstance(parts[0], (tuple, list)):
            inputs = ExampleInputs(tuple(_tensor(p, where) for p in parts[0]), {})
        else:
            inputs = ExampleInputs(tuple(_tensor(p, where) for p in parts), {})
    inputs = _conform(inputs, example, where)
    return inputs, (_labels(labels, inputs, where) if labels is not None else None)


def _tensor(value, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"a {type(value).__name__} of mixed objects")
        return torch.from_numpy(array.copy())
    except Exception as exc:
        raise user_error(f"{where}: cannot make a tensor from a {type(value).__name__}: {_first_line(exc)}",
                         "give tensors or numeric arrays") from exc


def _conform(inputs: ExampleInputs, example: ExampleInputs, where: str) -> ExampleInputs:
    """Same inputs (names or count) as the example; floats cast to the example's float dtype, integer widths
    to its integer dtype; a float where the model takes integers (or the reverse) is an error."""
    if example.kwargs:
        if not inputs.kwargs and len(inputs.args) == 1 and len(example.kwargs) == 1:
            inputs = ExampleInputs((), {next(iter(example.kwargs)): inputs.args[0]})
        missing = [n for n in example.kwargs if n not in inputs.kwargs]
        extra = [n for n in inputs.kwargs if n not in example.kwargs]
        if missing or extra:
            raise user_error(f"{where}: the data has inputs {', '.join(inputs.names) or 'none'}; the model "
                             f"takes {', '.join(example.names)}",
                             "give exactly the model's named inputs (as in --input / --example-inputs)")
        inputs = ExampleInputs((), {n: inputs.kwargs[n] for n in example.kwargs})
    elif inputs.kwargs or len(inputs.args) != len(example.args):
        raise user_error(f"{where}: a batch holds {len(inputs.tensors())} input(s) "
                         f"({', '.join(inputs.names)}); the model takes {len(example.args)} positional input(s)",
                         "give inputs, or (inputs, labels)")
    out = []
    for name, t, ref in zip(inputs.names, inputs.tensors(), example.tensors()):
        if t.dim() == 0 or t.dim() != ref.dim():
            raise user_error(f"{where}: input {name} has shape {_shape(t)}; the model takes {_shape(ref)} "
                             f"(batch first)", "stack samples along dim 0, with the example's other dims")
        if ref.dtype.is_floating_point != t.dtype.is_floating_point or (ref.dtype == torch.bool) != (t.dtype == torch.bool):
            raise user_error(f"{where}: input {name} is {_dtype(t)} but the model takes {_dtype(ref)}",
                             "convert it (images: float, scaled as in training; tokens: integer ids)")
        out.append(t.to(ref.dtype) if t.dtype != ref.dtype else t)
    return inputs.like(out)


def _labels(value, inputs: ExampleInputs, where: str) -> torch.Tensor:
    labels = _tensor(value, where)
    batch = inputs.tensors()[0].shape[0]
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        raise user_error(f"{where}: labels are {_dtype(labels)}; p2d takes integer class indices",
                         "e.g. labels = torch.tensor([3, 0, 7, ...]) (int64)")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise user_error(f"{where}: labels have shape {_shape(labels)}, the inputs {batch} samples",
                         "one integer class index per sample")
    return labels.to(torch.int64)


# --- checks against the model ------------------------------------------------------------------


def _checked(batches: list[Batch], model: nn.Module, example: ExampleInputs, spec: str, what: str) -> list[Batch]:
    """Run the model on the first batch; labels must index its first output's class dimension."""
    if not batches:
        return batches
    inputs, _ = batches[0]
    where = f"{what} {spec}"
    try:
        with torch.no_grad():
            output = inputs.call(model)
    except Exception as exc:
        from prune2deploy.model.inputs import describe

        raise user_error(f"{where}: the model does not run on the first batch ({describe(inputs)}): "
                         f"{_first_line(exc)[:200]}", "the data must fit the model like the example inputs") from exc
    labelled = [y for _, y in batches if y is not None]
    if not labelled:
        return batches
    if len(labelled) != len(batches):
        raise user_error(f"{where}: some batches have labels and some do not", "label every sample, or none")
    flat = flatten_outputs(output)
    first = flat[0][1] if flat else None
    if first is None or first.dim() != 2 or first.shape[1] < 2 or not first.dtype.is_floating_point:
        shape = _shape(first) if first is not None else "no tensor"
        raise user_error(f"{where}: the data has labels but the model's first output is {shape}, not class "
                         f"scores [batch, classes]", "drop the labels (the metric is then cosine to the dense model)")
    classes = first.shape[1]
    low, high = min(int(y.min()) for y in labelled), max(int(y.max()) for y in labelled)
    if low < 0 or high >= classes:
        raise user_error(f"{where}: labels range {low}..{high} but the model's output has {classes} classes",
                         "labels are class indices 0..classes-1 of the model's first output")
    return batches


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
