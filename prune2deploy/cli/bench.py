"""`p2d bench OUT_DIR`: time the ONNX files of an earlier compile again, on this machine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prune2deploy.errors import user_error
from prune2deploy.config.options import CompileOptions


def bench_out_dir(out_dir: Path, args) -> int:
    from prune2deploy.backends.ort_cpu.runner import OrtRunner

    from prune2deploy.backends.ort_cpu.driver import benchmark_onnx
    from prune2deploy.runtime.progress import Progress
    from prune2deploy.report.render import text_table

    paths = {n: out_dir / f"{n}.onnx" for n in ("dense", "pruned")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise user_error(f"{out_dir} has no {', '.join(missing)}", "pass a directory written by p2d compile")
    saved = out_dir / "example_inputs.pt"
    if saved.exists():
        import torch

        feed = {k: v.numpy() for k, v in torch.load(saved, weights_only=True).items()}
    else:
        feed = _feed_for(OrtRunner(paths["dense"], 1))
    opts = CompileOptions(threads=args.threads, bench_seconds=args.bench_seconds)
    result = benchmark_onnx(paths, feed, opts, Progress(enabled=False if args.json else None))
    stats = result["stats"]
    result["speedup"] = stats["dense"]["p50"] / stats["pruned"]["p50"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [["model", "p50 ms", "p90 ms", "p99 ms", "mean ms", "CV"]]
    rows += [[n, f"{s['p50']:.2f}", f"{s['p90']:.2f}", f"{s['p99']:.2f}", f"{s['mean']:.2f}", f"{s['cv']:.1%}"]
             for n, s in stats.items()]
    print(text_table(rows))
    print(f"speedup (dense p50 / pruned p50) {result['speedup']:.2f}x")
    for w in result["warnings"]:
        print(f"warning: {w}")
    return 0


def _feed_for(runner) -> dict:
    """Inputs shaped like the graph's inputs (dynamic dims as 1); integer inputs small and valid."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in runner.session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if "float" in inp.type:
            dtype = np.float16 if "float16" in inp.type else np.float32
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in inp.name:
            feed[inp.name] = np.ones(shape, dtype=np.int64)
        else:
            feed[inp.name] = rng.integers(0, 2, shape, dtype=np.int64)
    return feed


def cmd_bench(args) -> int:
    """Re-benchmark the dense.onnx and pruned.onnx of an existing output directory on this machine."""
    from pathlib import Path

    return bench_out_dir(Path(args.out_dir), args)
