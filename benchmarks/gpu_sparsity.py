"""GPU benchmark: dense vs pruned vs 2:4 vs pruned+2:4 through the torch-cuda backend.

Models
  * bert-base-sized encoder built from plain torch modules (hidden 768, FFN 3072, 12 layers,
    12 heads; batch 32 x seq 128, fp16). Attention and FFN are nn.Linear, so 2:4 applies.
  * torchvision ResNet-50 (batch 64, fp16), if torchvision imports. torch's semi-structured
    sparsity covers Linear only, so its 2:4 variants can touch just the classifier, and its 1000
    outputs are not a multiple of 16, so cuSPARSELt skips it (the table's "Linear on 2:4" column
    says so); conv 2:4 needs the TensorRT targets.

Variants
  * dense       - as built.
  * pruned      - encoder: structured FFN width reduction, 30% of the 3072 hidden units removed
                  per layer by magnitude (||fc1 row|| * ||fc2 column||), kept width rounded to a
                  multiple of 64 (3072 -> 2176); ResNet-50: torch-pruning MagnitudePruner channel
                  pruning at ratio 0.3 (round_to=8, classifier kept).
  * 2:4         - every eligible Linear masked to 2:4 (2 largest |w| of each 4 along the input
                  axis) and swapped to torch.sparse.to_sparse_semi_structured (cuSPARSELt/CUTLASS).
  * pruned+2:4  - both.
Timing: variants interleaved round-robin, one CUDA-event pair per call (backends/torch_cuda.py).
Results: Markdown table on stdout; JSON + Markdown under benchmarks/results/.

Usage: python benchmarks/gpu_sparsity.py [--models bert,resnet50] [--iters 50] [--warmup 10]
Needs a CUDA GPU (Ampere or newer for 2:4); exits 2 with one line otherwise.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXIT_NO_GPU = 2


def _torch_cuda_backend():
    """prune2deploy.backends.torch_cuda, also when the package is not pip-installed."""
    try:
        return importlib.import_module("prune2deploy.backends.torch_cuda")
    except ModuleNotFoundError as exc:
        if exc.name != "prune2deploy.backends":
            raise
    spec = importlib.util.spec_from_file_location(
        "prune2deploy.backends", REPO / "backends" / "__init__.py",
        submodule_search_locations=[str(REPO / "backends")],
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module("prune2deploy.backends.torch_cuda")


from prune2deploy.timing import summarize  # noqa: E402

try:  # the project's N:M mask when present
    from prune2deploy.passes.sparsity import nm_mask as _project_nm_mask
except ImportError:  # pragma: no cover - standalone use
    _project_nm_mask = None


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask keeping the 2 largest |w| of every 4 consecutive weights along the input axis."""
    if _project_nm_mask is not None:
        return _project_nm_mask(weight, 2, 4)
    groups = weight.detach().abs().reshape(weight.shape[0], -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(weight.shape)


# ---------------------------------------------------------------- models


class EncoderLayer(nn.Module):
    """Post-norm BERT layer from nn.Linear + scaled_dot_product_attention."""

    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)

    def forward(self, x):
        b, t, d = x.shape

        def split(y):
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        x = self.ln1(x + self.o(attn.transpose(1, 2).reshape(b, t, d)))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, hidden=768, heads=12, ffn=3072, layers=12):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def shrink_ffn(model: Encoder, ratio: float = 0.3, multiple: int = 64) -> Encoder:
    """Structured FFN width reduction: drop `ratio` of each layer's hidden units by magnitude."""
    for layer in model.layers:
        width = layer.fc1.out_features
        keep_n = max(multiple, int(round(width * (1 - ratio) / multiple)) * multiple)
        score = layer.fc1.weight.detach().norm(dim=1) * layer.fc2.weight.detach().norm(dim=0)
        keep = score.topk(keep_n).indices.sort().values
        fc1, fc2 = nn.Linear(layer.fc1.in_features, keep_n), nn.Linear(keep_n, layer.fc2.out_features)
        with torch.no_grad():
            fc1.weight.copy_(layer.fc1.weight[keep])
            fc1.bias.copy_(layer.fc1.bias[keep])
            fc2.weight.copy_(layer.fc2.weight[:, keep])
            fc2.bias.copy_(layer.fc2.bias)
        layer.fc1, layer.fc2 = fc1, fc2
    return model


def importable_torchvision():
    """torchvision, or None when it is absent or built against another torch (import then fails)."""
    try:
        import torchvision
    except Exception:
        return None
    return torchvision


def prune_resnet_channels(model: nn.Module, ratio: float = 0.3) -> nn.Module:
    """torch-pruning magnitude channel pruning, classifier kept, widths rounded to 8."""
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model, torch.randn(1, 3, 224, 224), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[model.fc], round_to=8,
    )
    pruner.step()
    return model


def apply_2to4_masks(model: nn.Module) -> int:
    """Zero all but the 2 largest of every 4 input weights of each Linear; returns layers masked."""
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.in_features % 4 == 0:
                module.weight.mul_(mask_2to4(module.weight))
                count += 1
    return count


# ---------------------------------------------------------------- benchmark


def n_params(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def build_variants(name: str, torch_cuda) -> tuple[dict, tuple, dict]:
    """(callables, inputs, metadata) for the four variants of one model, all on CUDA fp16."""
    torch.manual_seed(0)
    if name == "bert":
        base, example = Encoder(), (torch.randn(32, 128, 768),)
        pruned = shrink_ffn(copy.deepcopy(base), 0.3)
    elif name == "resnet50":
        base, example = importable_torchvision().models.resnet50(weights=None), (torch.randn(64, 3, 224, 224),)
        pruned = prune_resnet_channels(copy.deepcopy(base).eval(), 0.3)
    else:
        raise SystemExit(f"unknown model {name!r} (bert, resnet50)")

    candidates = {"dense": (base, False), "pruned": (pruned, False)}
    for label, source in (("2:4", base), ("pruned+2:4", pruned)):
        masked = copy.deepcopy(source)
        apply_2to4_masks(masked)
        candidates[label] = (masked, True)

    models, meta, inputs = {}, {}, None
    for label, (model, sparse) in candidates.items():
        params = n_params(model)
        reference = copy.deepcopy(model) if sparse else None
        prepared, inputs, report = torch_cuda.prepare(model, example, sparse_2to4=sparse)
        entry = {"params_m": round(params, 2), "linear_2to4": sum(r["converted"] for r in report)}
        if sparse:  # the semi-structured model must compute what the masked dense one does
            dense_masked, _, _ = torch_cuda.prepare(reference, example, sparse_2to4=False)
            with torch.no_grad():
                entry["max_abs_diff_vs_masked_dense"] = float((prepared(*inputs) - dense_masked(*inputs)).abs().max())
            del dense_masked
            entry["skipped"] = [f"{r['name']}: {r['reason']}" for r in report if not r["converted"]][:5]
        models[label], meta[label] = prepared, entry
    torch.cuda.empty_cache()
    return models, inputs, meta


def gpu_refusal() -> str:
    """Why this benchmark cannot run here ("" when it can)."""
    if not torch.cuda.is_available():
        build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"needs a CUDA GPU (Ampere or newer) and {build}; run it on a GPU machine"
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) < (8, 0):
        return f"{torch.cuda.get_device_name(0)} (sm {major}.{minor}) has no sparse tensor cores; needs Ampere or newer"
    return ""


def run(args) -> dict:
    torch_cuda = _torch_cuda_backend()
    refusal = gpu_refusal()
    if refusal:
        print(f"gpu_sparsity: {refusal}", file=sys.stderr)
        raise SystemExit(EXIT_NO_GPU)
    torch.backends.cudnn.benchmark = True
    results = {
        "device": torch.cuda.get_device_name(0),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "semi_structured_backend": torch_cuda.semi_structured_backend(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "warmup": args.warmup,
        "iters": args.iters,
        "models": {},
    }
    for name in args.models.split(","):
        if name == "resnet50" and importable_torchvision() is None:
            print("gpu_sparsity: torchvision does not import with this torch, skipping resnet50", file=sys.stderr)
            continue
        models, inputs, meta = build_variants(name, torch_cuda)
        samples = torch_cuda.benchmark(models, inputs, warmup=args.warmup, iters=args.iters)
        dense_median = summarize(samples["dense"])["p50"]
        rows = {}
        for label, times in samples.items():
            stats = summarize(times)
            rows[label] = {**stats, **meta[label], "speedup_vs_dense": dense_median / stats["p50"], "samples_ms": times}
        results["models"][name] = rows
        del models
        torch.cuda.empty_cache()
    return results


def markdown(results: dict) -> str:
    lines = [
        f"# GPU sparsity benchmark: {results['device']} (sm {results['capability']})",
        "",
        f"torch {results['torch']} (CUDA {results['cuda']}), semi-structured backend "
        f"{results['semi_structured_backend']}, {results['date']}, {results['iters']} interleaved iterations "
        f"after {results['warmup']} warm-up rounds.",
        "",
        "| model | variant | median ms | p90 ms | speedup vs dense | params (M) | Linear on 2:4 | max abs diff vs masked dense |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, rows in results["models"].items():
        for label, row in rows.items():
            diff = row.get("max_abs_diff_vs_masked_dense")
            lines.append(
                f"| {model} | {label} | {row['p50']:.3f} | {row['p90']:.3f} | {row['speedup_vs_dense']:.2f}x "
                f"| {row['params_m']:.1f} | {row['linear_2to4']} | {'' if diff is None else f'{diff:.2e}'} |"
            )
    return "\n".join(lines) + "\n"


def save(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", results["device"]).strip("-").lower()
    stem = f"gpu_sparsity_{slug}_{results['date'][:10]}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,resnet50", help="comma list of bert, resnet50")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    results = run(args)
    print(markdown(results))
    json_path, md_path = save(results, args.out)
    print(f"saved {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
