"""Example inputs from the command line: --input-shape, --input NAME:SHAPE:DTYPE, --example-inputs FILE."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.errors import UserError, user_error

MAX_ELEMENTS = 2**31  # values in one input tensor
# A compile holds the example inputs and about this many more sets like them at once (2 verification sets,
# 15 fidelity sets), besides the model's activations: together they must stay within a quarter of the memory.
INPUT_SETS_HELD = 18
DEPLOYED_SHAPE_HINT = "give the shape the model is deployed with, e.g. --input-shape 1,3,224,224"

DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
          "bool": torch.bool}


def parse_shape(text: str, sep: str = ",") -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", sep).split(sep) if d.strip())
    except ValueError:
        raise user_error(f"bad shape {text!r}", "write it like 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise user_error(f"bad shape {text!r}: dimensions must be positive integers")
    return dims


def parse_named_input(text: str) -> tuple[str, tuple[int, ...], torch.dtype]:
    """NAME:1x128:int64 -> (name, shape, dtype)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0].isidentifier():
        raise user_error(f"bad --input {text!r}", "write it like input_ids:1x128:int64")
    dtype_name = parts[2] if len(parts) == 3 else "float32"
    if dtype_name not in DTYPES:
        raise user_error(f"bad --input {text!r}: unknown dtype {dtype_name!r}",
                         f"use one of {', '.join(sorted(DTYPES))}")
    return parts[0], parse_shape(parts[1], sep="x"), DTYPES[dtype_name]


def make_tensor(name: str, shape, dtype: torch.dtype, generator: torch.Generator, high: int = 1000):
    """A plausible input: masks are ones, token types zeros, other integers in [0, high)."""
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    if dtype == torch.bool or "mask" in name:
        return torch.ones(shape, dtype=dtype)
    if "type" in name or "position" in name:
        return torch.zeros(shape, dtype=dtype)
    return torch.randint(0, high, shape, generator=generator, dtype=dtype)


def build_example_inputs(model: nn.Module, input_shape: str | None = None, inputs: list[str] = (),
                         example_file: str | None = None, seed: int = 0) -> ExampleInputs:
    """Resolve exactly one of the three input forms into ExampleInputs."""
    given = [x for x in (input_shape, list(inputs) or None, example_file) if x]
    if len(given) != 1:
        raise user_error("give the model's inputs once: --input-shape, --input (repeatable) or --example-inputs",
                         "e.g. --input-shape 1,3,224,224")
    g = torch.Generator().manual_seed(seed)
    if input_shape:
        shape = parse_shape(input_shape)
        check_input_size([(f"--input-shape {input_shape}", shape, torch.float32)])
        return ExampleInputs((torch.randn(shape, generator=g),), {})
    if example_file:
        loaded = load_example_inputs(Path(example_file))
        check_input_size([(f"--example-inputs {example_file} ({n})", tuple(t.shape), t.dtype)
                          for n, t in zip(loaded.names, loaded.tensors())])
        return loaded
    named = [parse_named_input(t) for t in inputs]
    check_input_size([(f"--input {text}", s, d) for text, (_, s, d) in zip(inputs, named)],
                     hint="give the shapes the model is deployed with, e.g. --input input_ids:1x128:int64")
    high = _token_range(model)
    return ExampleInputs((), {n: make_tensor(n, s, d, g, high) for n, s, d in named})


def memory_bytes() -> int | None:
    """This machine's memory (MemTotal in /proc/meminfo), or None where that cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_input_size(inputs: list[tuple[str, tuple[int, ...], torch.dtype]], memory: int | None = None,
                     hint: str = DEPLOYED_SHAPE_HINT) -> None:
    """Refuse, before anything is allocated, an input of more than MAX_ELEMENTS values, or inputs that a compile
    (which holds INPUT_SETS_HELD sets of them) could not keep within a quarter of this machine's memory."""
    total, where = 0, None
    for label, shape, dtype in inputs:
        elements = math.prod(shape)
        size = elements * torch.empty((), dtype=dtype).element_size()
        if elements > MAX_ELEMENTS:
            raise user_error(f"{label} is a tensor of {elements:,} values ({_gb(size)} as "
                             f"{str(dtype).removeprefix('torch.')}), more than p2d takes for one input "
                             f"(2**31 values)", hint)
        total += size
        where = where or label
    memory = memory if memory is not None else memory_bytes()
    if memory and total * INPUT_SETS_HELD > memory / 4:
        what = where if len(inputs) == 1 else "the example inputs"
        raise user_error(f"{what} is {_gb(total)}; a compile holds about {INPUT_SETS_HELD} input sets of that size "
                         f"({_gb(total * INPUT_SETS_HELD)}), more than a quarter of this machine's {_gb(memory)} "
                         f"memory", hint)


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _token_range(model: nn.Module) -> int:
    """Integer inputs stay below the vocabulary: config.vocab_size, else the first embedding's size."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab:
        return int(vocab)
    first = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return first.num_embeddings if first is not None else 1000


def load_example_inputs(path: Path) -> ExampleInputs:
    """A tensor, a tuple/list of tensors, or a dict name -> tensor saved with torch.save (weights-only)."""
    from prune2deploy.model.loading import refused_pickle, why_unreadable

    if not path.exists():
        raise user_error(f"example inputs file not found: {path}")
    hint = "save a tensor, a tuple of tensors or a dict of tensors with torch.save"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise (refused_pickle(path, exc, "example inputs", hint)
               or user_error(f"cannot read example inputs {path}: {why_unreadable(path, exc)}", hint)) from exc
    if isinstance(obj, torch.Tensor):
        return ExampleInputs((obj,), {})
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return ExampleInputs(tuple(obj), {})
    if isinstance(obj, dict) and obj and all(isinstance(t, torch.Tensor) for t in obj.values()):
        return ExampleInputs((), dict(obj))
    raise user_error(f"{path} holds a {type(obj).__name__}, not tensors",
                     "save a tensor, a tuple of tensors or a dict of tensors with torch.save")


def random_like(inputs: ExampleInputs, seed: int) -> ExampleInputs:
    """Inputs of the same shapes and dtypes; integers stay within the example's own range."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs.tensors():
        if t.dtype.is_floating_point:
            out.append(torch.randn(t.shape, generator=g).to(t.dtype))
        elif t.dtype == torch.bool or t.numel() == 0 or int(t.min()) == int(t.max()):
            out.append(t.clone())
        else:
            out.append(torch.randint(int(t.min()), int(t.max()) + 1, t.shape, generator=g, dtype=t.dtype))
    return inputs.like(out)


def describe(inputs: ExampleInputs) -> str:
    return ", ".join(f"{n}[{'x'.join(map(str, t.shape))}]:{str(t.dtype).removeprefix('torch.')}"
                     for n, t in zip(inputs.names, inputs.tensors()))


def check_model_runs(model: nn.Module, inputs: ExampleInputs):
    """Run the model once; a failure here is the user's inputs not fitting the model. An output that is not
    finite (NaN, Inf) is refused too: nothing can be verified or compared against it."""
    try:
        with torch.no_grad():
            output = inputs.call(model)
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise user_error(f"the model does not run on the example inputs {describe(inputs)}: {first[:200]}",
                         "check --input-shape/--input against what the model expects") from exc
    bad = nonfinite(output)
    if bad:
        raise user_error(f"the model's output is not finite on the example inputs {describe(inputs)} ({bad}): "
                         f"the dense model itself gives NaN/Inf, so nothing can be verified against it",
                         "check the model's weights (torch.isfinite) and what it computes on such inputs")
    return output


def nonfinite(output) -> str | None:
    """'NaN in output_1' (or Inf) for the first floating output that is not finite; None when all are."""
    from prune2deploy.model.outputs import flatten_outputs

    for name, t in flatten_outputs(output):
        if (t.dtype.is_floating_point or t.dtype.is_complex) and not bool(torch.isfinite(t).all()):
            return f"{'NaN' if bool(torch.isnan(t).any()) else 'Inf'} in {name}"
    return None
