"""How the pruning pass alone grows along the ViT series (issue 13): user and kernel CPU time, page faults.

The scale sweep (scale.py) times every stage of whole compiles, once each, on a shared machine. This script
isolates `prune_channels`: one fresh process per (model, repetition), the models interleaved (B, L, H, B, L,
H, ...), one thread, optionally pinned to one core, and keeps the fastest repetition of each model. Its parts:
the model runs (`_forward`: output shapes and the rollback check), torch-pruning's dependency-graph traces,
`Group.prune` (torch-pruning copying the kept slices of every weight) and the rest. User and kernel (sys) time
are apart: the kernel's share is mostly first touch of new memory (page faults), whose cost on a VM varies
from run to run. Models: scale.py's ViT-B/16, ViT-L/16 and ViT-H/14 at 196 px (197 tokens each, so only the
size changes), random weights, ratio 0.5.

Usage: python benchmarks/prune_growth.py [--models vit_b_16,vit_l_16,vit_h_14_196] [--reps 3] [--cpu 1]
Writes benchmarks/results/prune_growth.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
SHAPES = {"vit_b_16": (1, 3, 224, 224), "vit_l_16": (1, 3, 224, 224), "vit_h_14_196": (1, 3, 196, 196)}
PARTS = ("model runs", "graph traces", "weight copies", "rest")


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def measure_once(name: str) -> dict:
    """In this (fresh) process: build the model, run the pruning pass once, account its parts."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE.parent))
    import scale
    import torch_pruning as tp

    from prune2deploy.context import CompileContext, ExampleInputs
    from prune2deploy.passes import prune_channels

    parts = {p: [0.0, 0.0, 0] for p in PARTS[:-1]}

    def account(owner, attr: str, part: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            before = _usage()
            try:
                return inner(*args, **kwargs)
            finally:
                after = _usage()
                for i in range(3):
                    parts[part][i] += after[i] - before[i]
        setattr(owner, attr, timed)

    account(prune_channels, "_forward", "model runs")
    account(tp.DependencyGraph, "build_dependency", "graph traces")
    account(tp.dependency.Group, "prune", "weight copies")
    model = getattr(scale, name)().eval()
    params = sum(p.numel() for p in model.parameters())
    ctx = CompileContext(ExampleInputs((torch.randn(*SHAPES[name]),), {}))
    start, wall = _usage(), time.perf_counter()
    prune_channels.PruneChannels(0.5).run(model, ctx)
    wall, end = time.perf_counter() - wall, _usage()
    total = [end[i] - start[i] for i in range(3)]
    parts["rest"] = [total[i] - sum(p[i] for p in parts.values()) for i in range(3)]
    return {"model": name, "params": params, "wall_s": round(wall, 3), "user_s": round(total[0], 3),
            "sys_s": round(total[1], 3), "faults": total[2],
            "parts": {k: {"user_s": round(v[0], 3), "sys_s": round(v[1], 3), "faults": v[2]} for k, v in parts.items()}}


def _spawn(name: str, cpu: int | None) -> dict:
    cmd = [sys.executable, str(HERE), "--one", name]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cpu(row: dict) -> float:
    return row["user_s"] + row["sys_s"]


def markdown(best: dict[str, dict], runs: list[dict], meta: dict) -> str:
    base = next(iter(best.values()))
    lines = [f"Pruning pass alone, {meta['date']} on {meta['machine']}: one thread{meta['pinned']}, fastest of "
             f"{meta['reps']} interleaved fresh processes per model (by user + sys CPU time); load average "
             f"{meta['load_before']} before, {meta['load_after']} after. Ratio 0.5, random weights.", "",
             "| model | params | params ratio | wall s | user s | sys s | CPU ratio | user ratio | page faults | "
             + " | ".join(f"{p} user/sys s" for p in PARTS) + " |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(PARTS)]
    for name, row in best.items():
        cells = [name, f"{row['params'] / 1e6:.0f}M", f"{row['params'] / base['params']:.2f}", f"{row['wall_s']:.2f}",
                 f"{row['user_s']:.2f}", f"{row['sys_s']:.2f}", f"**{_cpu(row) / _cpu(base):.2f}**",
                 f"{row['user_s'] / base['user_s']:.2f}", f"{row['faults']:,}"]
        cells += [f"{row['parts'][p]['user_s']:.2f}/{row['parts'][p]['sys_s']:.2f}" for p in PARTS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Every repetition (user + sys CPU s): " + "; ".join(
        f"{name} " + ", ".join(f"{_cpu(r):.2f}" for r in runs if r["model"] == name) for name in best), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu", type=int, help="pin every run to this core")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_once(args.one)))
        return 0
    models = args.models.split(",")
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "reps": args.reps,
            "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "load_before": round(os.getloadavg()[0], 1),
            "pinned": f", pinned to core {args.cpu}" if args.cpu is not None else ""}
    runs = []
    for rep in range(args.reps):
        for name in models:
            runs.append(_spawn(name, args.cpu))
            print(json.dumps(runs[-1]), flush=True)
    meta["load_after"] = round(os.getloadavg()[0], 1)
    best = {name: min((r for r in runs if r["model"] == name), key=_cpu) for name in models}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune_growth.json").write_text(json.dumps({"meta": meta, "best": best, "runs": runs}, indent=2) + "\n")
    text = markdown(best, runs, meta)
    (out / "prune_growth.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
