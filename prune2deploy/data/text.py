"""`text:FILE`: one sentence per line, tokenized with the `hf:` model's own tokenizer (offline).

Each batch is padded to its longest sentence, truncated at --max-length tokens; sentences of similar length
are batched together (data.grouped_by_length), so little of a batch is padding. The batch holds the
model's named inputs (those of --input / --example-inputs, e.g. input_ids and attention_mask).
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from prune2deploy.context import ExampleInputs
from prune2deploy.data.samples import Samples
from prune2deploy.errors import user_error


def read_text(path: Path, model: nn.Module, example: ExampleInputs, options, what: str) -> Samples:
    if not path.is_file():
        raise user_error(f"{what} text file not found: {path}")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise user_error(f"cannot read {what} text:{path}: {exc}", "one UTF-8 sentence per line") from exc
    sentences = [line for line in lines if line]
    if not sentences:
        raise user_error(f"{what} text:{path} holds no sentences (the file is empty or blank)",
                         "one UTF-8 sentence per line")
    tokenizer = _tokenizer(model, what, path)
    if not example.kwargs:
        raise user_error(f"{what} text:{path} needs a model with named token inputs",
                         "describe them with --input input_ids:1x128:int64 --input attention_mask:1x128:int64")
    names = list(example.kwargs)
    dtypes = {n: t.dtype for n, t in example.kwargs.items()}

    def take(idx):
        encoded = tokenizer([sentences[i] for i in idx], padding=True, truncation=True,
                            max_length=options.max_length, return_tensors="pt")
        missing = [n for n in names if n not in encoded]
        if missing:
            raise user_error(f"{what} text:{path}: the tokenizer gives {', '.join(encoded)}, not "
                             f"{', '.join(missing)}", "name the model's inputs as its tokenizer does")
        return ExampleInputs((), {n: encoded[n].to(dtypes[n]) for n in names}), None

    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=options.max_length)["input_ids"]]
    return Samples(len(sentences), take, lengths=lengths)


def _tokenizer(model: nn.Module, what: str, path: Path):
    source = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    if not source or not (Path(source) / "config.json").exists():
        raise user_error(f"{what} text:{path} needs the tokenizer of an hf:PATH model",
                         "load the model as hf:PATH (a local transformers directory with its tokenizer)")
    from prune2deploy.model.loading import import_transformers

    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise user_error(f"{what} text:{path}: no tokenizer in {source}: {str(exc).splitlines()[0][:160]}",
                         "save the tokenizer next to the model (tokenizer.save_pretrained)") from exc
