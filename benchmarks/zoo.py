"""Zoo: does `p2d compile <library>:<name> --ratio 0.5` work on what users bring? (not CI; long)

One torchvision classification model per family (the smallest; `--all-torchvision` for every one that
builds here, 80 today, hours on a laptop) and a dozen timm models, RANDOM weights
(`weights=None` / `pretrained=False`; nothing downloads), batch 1, target ort-cpu. Each model is one
`p2d compile` subprocess, as a user runs it, bounded by --max-memory-gb and --stage-timeout
(row_limits: max(4 GB, 6x the FP32 weights) up to 12 GB; more time for models over 100M params):

  * status: compiled (whole-model graph, nothing skipped), compiled block-local, degraded (groups left
    unpruned because pruning them broke the model, listed in report.json `skipped`; attention whose heads
    are kept is counted apart), refused (exit 2, one line), failed (exit 1, p2d's own error line),
    internal error (exit 1, an unexpected exception), killed (ran past the row's time limit);
  * MAC reduction, speedup (dense p50 / pruned p50 from p2d's interleaved benchmark), verification
    (ONNX vs torch), wall time and peak RSS of the compile process.

torchvision ViTs zero-initialise their classifier (every output 0 with random weights); GoogLeNet's,
ShuffleNet's and CaiT's random init gives the same output for every image: verification is blind to them, so
the zoo compiles them from this file (`zoo.py:vit_b_16`, ..., REBUILT) with an init it can see through; a row
whose report warns that an output is all zeros or barely moves with the input says verified "vacuous" and does
not count as verified.

Input sizes: torchvision models with a fixed input size (ViT, MaxViT, Swin, AlexNet, VGG) and every timm model get 224;
the other torchvision models get --size (default 224; smaller sizes run faster; the table says which).

Usage: python benchmarks/zoo.py [--models torchvision:resnet18,timm:vit_tiny_patch16_224] [--size 224]
       [--bench-seconds 2] [--limit N] [--quick] [--all-torchvision] [--resume] [--merge OTHER/zoo.json]
Writes benchmarks/results/zoo.json and zoo.md (rows are written as they finish, so an interrupted sweep
keeps what it measured; `--resume` runs only the models that have no row yet; chunks run in parallel
with their own --out are joined with `--merge`). Each row records the
commit of the p2d that compiled it (`git describe --always --dirty` of the imported package, or
$ZOO_COMMIT when it runs from an exported snapshot).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ROW_TIMEOUT_S = 900  # a row's time limit for models up to 100M params; bigger ones get more (row_limits)
MAX_MEMORY_GB = 4  # the smallest per-process memory cap; bigger models get 6x their FP32 weights (row_limits)
MEMORY_CEILING_GB = 12  # the sweep's share of the shared 24 GB development machine
STAGE_TIMEOUT_S = 240
TIMM_MODELS = (
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224",
    "convnext_atto", "efficientnet_b0", "mobilenetv3_small_100", "regnety_002", "resnet18", "levit_128s",
    "mobilevit_xxs", "ghostnet_100", "cait_xxs24_224", "densenet121",
)
TORCHVISION_FAMILIES = (  # the smallest member of each torchvision classification family
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf",
    "resnet18", "resnet50", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t",
    "vgg11", "vit_b_16", "wide_resnet50_2",
)
# torchvision models whose input size is part of the architecture (AlexNet/VGG: adaptive pooling to 6x6/7x7,
# which ONNX can only express for a multiple of it; p2d refuses 128 with that hint)
FIXED_224 = ("vit_", "maxvit_", "swin_", "alexnet", "vgg")
# models whose random init leaves verification blind (p2d warns), compiled from this file instead: torchvision
# ViT zero-initialises its classifier (every output 0): ViT's own init for it (scale.py); GoogLeNet's and
# ShuffleNet's and GhostNet's signal dies out and CaiT's LayerScale (1e-5) mutes its blocks (the same logits
# for every image to 1e-12..1e-3): BN statistics from random images, LayerScale 0.1.
VITS = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
FADING = ("googlenet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
REBUILT = {**{f"torchvision:{name}": "classifier re-initialised" for name in VITS},
           **{f"torchvision:{name}": "BN statistics from 8 random images" for name in FADING},
           "timm:ghostnet_100": "BN statistics from 8 random images", "timm:cait_xxs24_224": "LayerScale init 0.1 (timm: 1e-5)"}
QUICK = ("torchvision:resnet18", "torchvision:shufflenet_v2_x0_5", "timm:vit_tiny_patch16_224",
         "torchvision:swin_t")


def torchvision_models(every: bool = False) -> list[str]:
    sys.path.insert(0, str(REPO))
    from prune2deploy.runtime.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        return []
    names = sorted(tv.models.list_models(module=tv.models))
    return [f"torchvision:{n}" for n in names if every or n in TORCHVISION_FAMILIES]


def weight_params(spec: str) -> int:
    """Parameter count from torchvision's weight metadata (no model is built); 0 where unknown (timm)."""
    lib, name = spec.split(":", 1)
    if lib != "torchvision":
        return 0
    from prune2deploy.runtime.compat import import_torchvision

    try:
        return min(w.meta["num_params"] for w in import_torchvision().models.get_model_weights(name))
    except Exception:
        return 0


def by_cost(models: list[str]) -> list[str]:
    """Cheapest first (by parameter count), so a sweep that runs out of time has measured the most models."""
    return sorted(models, key=weight_params)


def row_limits(params: int) -> tuple[float, float, float]:
    """(memory cap GB, stage timeout s, row timeout s) for a model of `params` FP32 parameters.

    The cap is max(4 GB, 6x the FP32 weights) bounded by 12 GB (issue 13's target is a peak <= 4x the
    weights for models >= 100M params; the table shows each peak); models over 100M params get 3 s more
    per million for the row.
    """
    cap = min(MEMORY_CEILING_GB, max(MAX_MEMORY_GB, round(6 * params * 4 / 1024**3, 1)))
    row = ROW_TIMEOUT_S + 3 * max(0, params - 100_000_000) / 1e6
    return cap, max(STAGE_TIMEOUT_S, row / 2), row


def __getattr__(name: str):
    """`zoo.py:vit_b_16` (any of REBUILT): that model, with an init verification can see through."""
    if not any(spec.endswith(f":{name}") for spec in REBUILT):
        raise AttributeError(name)

    def build():
        if name in FADING or name == "ghostnet_100":
            return _with_bn_statistics(name)
        if name.startswith("cait_"):
            from prune2deploy.runtime.compat import import_optional

            return import_optional("timm").create_model(name, pretrained=False, init_values=0.1).eval()
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from scale import _vit

        return _vit(name)

    build.__name__ = build.__qualname__ = name
    return build


def _with_bn_statistics(name: str):
    """A torchvision (or timm GhostNet) model, random weights, its BatchNorms holding 8 random images' statistics."""
    import torch

    from prune2deploy.runtime.compat import import_optional, import_torchvision

    torch.manual_seed(0)
    timm = name == "ghostnet_100"
    model = (import_optional("timm").create_model(name, pretrained=False) if timm
             else import_torchvision().models.get_model(name, weights=None))
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 224 if timm else 128, 224 if timm else 128))
    return model.eval()


def compile_spec(spec: str) -> str:
    """What `p2d compile` gets for a row: the spec itself, or this file's builder (REBUILT)."""
    return f"{Path(__file__).resolve()}:{spec.split(':', 1)[1]}" if spec in REBUILT else spec


def p2d_commit() -> str:
    """The commit of the p2d the compiles import (a snapshot run sets $ZOO_COMMIT)."""
    if os.environ.get("ZOO_COMMIT"):
        return os.environ["ZOO_COMMIT"]
    import prune2deploy

    where = Path(prune2deploy.__file__).resolve().parent
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=where, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"


def input_size(spec: str, size: int) -> int:
    lib, name = spec.split(":", 1)
    if lib == "torchvision":
        return 224 if name.startswith(FIXED_224) else max(size, 75 if name == "inception_v3" else size)
    return 224  # timm: many models fix their input size (ViT, Swin, LeViT, CaiT); 224 is every listed one's


def run_one(spec: str, size: int, bench_seconds: float) -> dict:
    """One `p2d compile` subprocess; its exit code, report and resource use."""
    s = input_size(spec, size)
    cap_gb, stage_s, row_s = row_limits(weight_params(spec))
    with tempfile.TemporaryDirectory(prefix="p2d-zoo-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "prune2deploy", "compile", compile_spec(spec), "--input-shape", f"1,3,{s},{s}",
               "--ratio", "0.5", "--out", str(out), "--no-cache", "--bench-seconds", str(bench_seconds),
               "--max-memory-gb", str(cap_gb), "--stage-timeout", str(round(stage_s))]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1"})
        try:
            stdout, stderr = proc.communicate(timeout=row_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        wall = time.perf_counter() - started
        row = {"model": spec, "input": s, "exit": proc.returncode, "wall_s": round(wall, 1), "cap_gb": cap_gb,
               "row_timeout_s": round(row_s), **({"init": REBUILT[spec]} if spec in REBUILT else {}),
               "finished": dt.datetime.now(dt.timezone.utc).strftime("%H:%M UTC")}
        report_path = out / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        row["peak_rss_mb"] = report.get("peak_rss_mb") if report else None  # the compile process's own
    row.update(_classify(proc.returncode, report, stderr))
    return row


def _classify(code: int | None, report: dict | None, stderr: str) -> dict:
    lines = [line for line in stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    if code == 0 and report:
        kept = [s for s in report.get("skipped", []) if "attention heads kept" in s["reason"]]
        skipped = [s for s in report.get("skipped", []) if s not in kept]  # groups that broke the model
        mode = report.get("pruning_mode")
        blind = [w for w in report.get("warnings", []) if "verification cannot see errors" in w]
        status = "degraded" if skipped else ("compiled block-local" if mode == "block-local" else "compiled")
        return {"status": status, "pruning_mode": mode, "skipped": len(skipped), "attention_kept": len(kept),
                "skipped_groups": [f"{s['group']}: {s['reason']}" for s in skipped][:10],
                "mac_reduction": report.get("mac_reduction"), "speedup": report.get("speedup"),
                "verified": "vacuous" if blind else report["verification"]["passed"],
                "max_rel_err": report["verification"]["max_rel_err"]}
    last = lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1]
    status = {2: "refused", 1: "internal error" if last.startswith("internal error:") else "failed"}.get(code, "killed")
    return {"status": status, "message": last[:300]}


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"Zoo sweep {meta['date']} on {meta['machine']} (ratio 0.5, ort-cpu, random weights, "
           f"benchmark {meta['bench_seconds']} s per compile; p2d {', '.join(meta.get('commits', ['?']))})", "",
           "| model | input | status | mode | skipped groups | attention kept | MAC reduction | speedup | verified "
           "| wall s | peak RSS MB | cap GB | commit |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v, f: f.format(v) if isinstance(v, (int, float)) else "-")
        out.append(f"| {r['model']} | {r['input']} | {r['status']} | {r.get('pruning_mode') or '-'} | "
                   f"{r.get('skipped', '-')} | {r.get('attention_kept', '-')} | {fmt(r.get('mac_reduction'), '{:.2f}x')} | "
                   f"{fmt(r.get('speedup'), '{:.2f}x')} | {r.get('verified', '-')} | {r['wall_s']} | "
                   f"{r.get('peak_rss_mb') or '-'} | {r.get('cap_gb', '-')} | {r.get('commit', '-')} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    ok = sum(1 for r in rows if r["status"] in ("compiled", "compiled block-local", "degraded") and r.get("verified") is True)
    out += ["", f"{ok}/{len(rows)} compile with verified numerics ("
            + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")"]
    notes = [f"- {r['model']}: {r['message']}" for r in rows if r.get("message")]
    notes += [f"- {note}" for note in meta.get("notes", [])]  # written by hand into zoo.json; kept on re-render
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def merge(out: Path, others: list[Path]) -> int:
    """OUT/zoo.json gets the rows (and commits) of `others` for models it has no row for; zoo.md is rewritten."""
    sweep = json.loads((out / "zoo.json").read_text())
    for other in others:
        chunk = json.loads(other.read_text())
        done = {r["model"] for r in sweep["rows"]}
        sweep["rows"] += [r for r in chunk["rows"] if r["model"] not in done]
        sweep["meta"]["commits"] = list(dict.fromkeys(sweep["meta"].get("commits", []) +
                                                      chunk["meta"].get("commits", [])))
    (out / "zoo.json").write_text(json.dumps(sweep, indent=2) + "\n")
    (out / "zoo.md").write_text(markdown(sweep["rows"], sweep["meta"]))
    print(markdown(sweep["rows"], sweep["meta"]))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated LIB:NAME (default: all torchvision + the timm list)")
    ap.add_argument("--size", type=int, default=224, help="input size for models without a fixed one")
    ap.add_argument("--bench-seconds", type=float, default=2.0)
    ap.add_argument("--limit", type=int, help="only the first N models")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--all-torchvision", action="store_true", help="every torchvision model, not one per family")
    ap.add_argument("--resume", action="store_true", help="keep the rows in OUT/zoo.json, run the missing models")
    ap.add_argument("--merge", metavar="ZOO_JSON", action="append",
                    help="add the rows of another sweep's zoo.json (a chunk run in parallel) to OUT and stop")
    ap.add_argument("--render", action="store_true", help="only rewrite OUT/zoo.md from OUT/zoo.json")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.merge or args.render:
        return merge(Path(args.out), [Path(m) for m in args.merge or []])
    models = (args.models.split(",") if args.models else list(QUICK) if args.quick
              else torchvision_models(args.all_torchvision) + [f"timm:{n}" for n in TIMM_MODELS])
    models = by_cost(models[:args.limit] if args.limit else models)
    commit = p2d_commit()
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "bench_seconds": args.bench_seconds, "size": args.size, "commits": [commit]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.resume and (out / "zoo.json").exists():
        previous = json.loads((out / "zoo.json").read_text())
        meta = {**previous["meta"], "commits": list(dict.fromkeys(previous["meta"].get("commits", []) + [commit]))}
        rows = previous["rows"]
    done = {r["model"] for r in rows}
    for spec in [m for m in models if m not in done]:
        row = {**run_one(spec, args.size, args.bench_seconds), "commit": commit}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "zoo.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (out / "zoo.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
