"""Example inputs from the command line: --input-shape, --input NAME:SHAPE:DTYPE, --example-inputs FILE."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.errors import UserError, user_error

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
        return ExampleInputs((torch.randn(parse_shape(input_shape), generator=g),), {})
    if example_file:
        return load_example_inputs(Path(example_file))
    high = _token_range(model)
    named = [parse_named_input(t) for t in inputs]
    return ExampleInputs((), {n: make_tensor(n, s, d, g, high) for n, s, d in named})


def _token_range(model: nn.Module) -> int:
    """Integer inputs stay below the vocabulary: config.vocab_size, else the first embedding's size."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab:
        return int(vocab)
    first = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return first.num_embeddings if first is not None else 1000


def load_example_inputs(path: Path) -> ExampleInputs:
    """A tensor, a tuple/list of tensors, or a dict name -> tensor saved with torch.save (weights-only)."""
    if not path.exists():
        raise user_error(f"example inputs file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise user_error(f"cannot read example inputs {path}: {str(exc).splitlines()[0][:160]}",
                         "save a tensor, a tuple of tensors or a dict of tensors with torch.save") from exc
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
    """Run the model once; a failure here is the user's inputs not fitting the model."""
    try:
        with torch.no_grad():
            return inputs.call(model)
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise user_error(f"the model does not run on the example inputs {describe(inputs)}: {first[:200]}",
                         "check --input-shape/--input against what the model expects") from exc
