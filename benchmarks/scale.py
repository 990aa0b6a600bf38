"""Scale: how memory and time grow with model size (issue 13). Not CI; ViT-H alone takes minutes and ~10 GB.

Each model is one `p2d compile --ratio 0.5 --target ort-cpu --no-cache` subprocess, as a user runs it:
torchvision ViT-B/16, ViT-L/16, ViT-H/14 (classifier re-initialised: torchvision's zero head makes
every output 0 and verification vacuous) and BERT-base/large-sized encoders (transformers' BertModel
built from BertConfig, 1x128 tokens), all RANDOM weights (latency and memory do not depend on them; nothing
downloads). Per model: parameters, FP32 weight bytes, p2d's own peak RSS (whole compile and per stage, the
kernel's high-water mark reset per stage), peak / weights, wall time per stage, speedup, MAC reduction,
pruning mode, exporter, external data, verification. A sampler in this process also reads the child's
VmRSS every 0.1 s: an independent lower bound on the peak, to check p2d's number against.

`--exporters` measures what the exporter choice costs instead: the dense model exported by p2d's
export_onnx in each of EXPORT_VARIANTS (TorchScript or dynamo, inline + onnxslim as below 128 MB of
weights, or as on the large-model path), peak RSS above the start and seconds, one subprocess per row.

Usage: python benchmarks/scale.py [--models vit_b_16,vit_l_16,vit_h_14,bert_base,bert_large]
       [--bench-seconds 8] [--graph-budget-s 300] | --exporters [--models vit_b_16,bert_base]
Writes benchmarks/results/scale.{json,md} (or scale_exporters.{json,md}); rows are written as they finish.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HERE = Path(__file__).resolve()
ROW_TIMEOUT_S = 1800
MAX_MEMORY_GB = 13  # what this machine lends the scale runs (24 GB shared by four engineers)
STAGE_TIMEOUT_S = 900
TOKENS = ["--input", "input_ids:1x128:int64", "--input", "attention_mask:1x128:int64",
          "--input", "token_type_ids:1x128:int64"]
IMAGE = ["--input-shape", "1,3,224,224"]
MODELS = {  # name -> (p2d MODEL spec, input flags)
    "vit_b_16": (f"{HERE}:vit_b_16", IMAGE),
    "vit_l_16": (f"{HERE}:vit_l_16", IMAGE),
    "vit_h_14": (f"{HERE}:vit_h_14", IMAGE),
    "vit_h_14_196": (f"{HERE}:vit_h_14_196", ["--input-shape", "1,3,196,196"]),
    "bert_base": (f"{HERE}:bert_base", TOKENS),
    "bert_large": (f"{HERE}:bert_large", TOKENS),
}
TOKENS_SEEN = {"vit_b_16": 197, "vit_l_16": 197, "vit_h_14": 257, "vit_h_14_196": 197,  # ViT: patches + class token
               "bert_base": 128, "bert_large": 128}
VIT_SERIES = ("vit_b_16", "vit_l_16", "vit_h_14", "vit_h_14_196")
BERT_SERIES = ("bert_base", "bert_large")


def _vit(name: str, **kwargs):
    """torchvision's ViT with random weights. torchvision zero-initialises the classifier, so every output
    would be 0 and verification could see no error: the head gets ViT's own init (normal, std 0.02)."""
    import torch

    from prune2deploy.runtime.compat import import_optional

    model = getattr(import_optional("torchvision").models, name)(**kwargs)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval()


def vit_b_16():
    """torchvision ViT-B/16 (86M parameters)."""
    return _vit("vit_b_16")


def vit_l_16():
    """torchvision ViT-L/16 (304M parameters)."""
    return _vit("vit_l_16")


def vit_h_14():
    """torchvision ViT-H/14 (632M parameters, 2.5 GB: past protobuf's 2 GB)."""
    return _vit("vit_h_14")


def vit_h_14_196():
    """ViT-H/14 on 196x196 images: 14x14 patches + the class token = 197 tokens, as ViT-B/16 and ViT-L/16 see at
    224. At 224 ViT-H/14 sees 257, so its compute per parameter is 1.3x theirs; at 196 size is the only change."""
    return _vit("vit_h_14", image_size=196)


def _bert(hidden: int, layers: int, heads: int):
    from prune2deploy.runtime.compat import import_optional

    import_optional("torchvision")  # transformers imports torchvision when installed: through p2d's shim
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, attn_implementation="eager")
    return BertModel(config).eval()


def bert_base():
    """BERT-base-sized encoder (110M parameters), random weights."""
    return _bert(768, 12, 12)


def bert_large():
    """BERT-large-sized encoder (335M parameters), random weights."""
    return _bert(1024, 24, 16)


class RssSampler(threading.Thread):
    """Largest VmRSS of a process seen by polling (a lower bound on its true peak)."""

    def __init__(self, pid: int, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak_mb, self._done = pid, every_s, 0.0, threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._done.wait(self.every_s):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            except (OSError, ValueError):
                return

    def stop(self) -> float:
        self._done.set()
        self.join()
        return round(self.peak_mb, 1)


def run_compile(name: str, bench_seconds: float, graph_budget_s: float) -> dict:
    spec, input_flags = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="p2d-scale-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "prune2deploy", "compile", spec, *input_flags, "--ratio", "0.5",
               "--out", str(out), "--no-cache", "--bench-seconds", str(bench_seconds),
               "--graph-budget-s", str(graph_budget_s), "--max-memory-gb", str(MAX_MEMORY_GB),
               "--stage-timeout", str(STAGE_TIMEOUT_S)]
        load_before = os.getloadavg()[0]
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env={**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1"})
        sampler = RssSampler(proc.pid)
        sampler.start()
        try:
            _, stderr = proc.communicate(timeout=ROW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        row = {"model": name, "exit": proc.returncode, "process_wall_s": round(time.perf_counter() - started, 1),
               "process_cpu_s": round(_children_cpu_s() - cpu_before, 1),
               "sampled_peak_rss_mb": sampler.stop(), "load_avg_1m": [round(load_before, 1),
                                                                      round(os.getloadavg()[0], 1)]}
        report_path = out / "report.json"
        if proc.returncode != 0 or not report_path.exists():
            lines = [x for x in stderr.splitlines() if x.strip()]
            row["error"] = (lines[-1] if lines else f"exit {proc.returncode}")[:300]
            return row
        report = json.loads(report_path.read_text())
        files = {p.name: p.stat().st_size for p in out.iterdir()}
    dense = report["models"]["dense"]
    weight_bytes = report["export"]["dense"]["weight_bytes"]
    row.update({
        "params": dense["params"], "macs": dense.get("macs"), "tokens": TOKENS_SEEN.get(name),
        "weight_bytes": weight_bytes, "peak_rss_mb": report["peak_rss_mb"],
        "peak_over_weights": round(report["peak_rss_mb"] * 1024**2 / weight_bytes, 2),
        "stages_peak_rss_mb": report["stages_peak_rss_mb"], "stages_s": report["stages_s"],
        "stages_cpu_s": report["stages_cpu_s"],
        "compile_wall_s": report["wall_s"], "speedup": report["speedup"], "mac_reduction": report["mac_reduction"],
        "efficiency": report["efficiency"], "pruning_mode": report["pruning_mode"],
        "exporters": {k: v["exporter"] for k, v in report["export"].items()},
        "external_data": {k: v["external_data"] for k, v in report["export"].items()},
        "verification": {k: report["verification"][k] for k in ("passed", "max_rel_err", "tolerance")},
        "latency_p50_ms": {k: v["latency_ms"]["p50"] for k, v in report["models"].items()},
        "onnx_bytes": {k: v["onnx_bytes"] for k, v in report["models"].items()}, "files": files,
    })
    return row


EXPORT_VARIANTS = {  # variant -> (exporter, small-model path: inline weights + onnxslim)
    "torchscript+onnxslim": ("torchscript", True),  # p2d before issue 13, for every model
    "dynamo+onnxslim": ("dynamo", True),
    "torchscript": ("torchscript", False),  # --exporter torchscript on a large model
    "dynamo": ("dynamo", False),  # --exporter auto on a large model: weights streamed to external data
}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def export_worker(name: str, variant: str) -> dict:
    """In a fresh process: build the dense model, export it as p2d does in `variant`; peak above start."""
    sys.path.insert(0, str(REPO))
    from prune2deploy.backends.onnx import export as onnx_export
    from prune2deploy.backends.onnx.export import export_onnx
    from prune2deploy.model.loading import load_model
    from prune2deploy.runtime.peak_memory import PeakTracker
    from prune2deploy.runtime.watchdog import rss_bytes

    spec, flags = MODELS[name]
    model = load_model(spec).model
    inputs = _example_inputs(flags)
    tracker, tmp = PeakTracker(), tempfile.mkdtemp(prefix="p2d-scale-export-")
    exporter, small_path = EXPORT_VARIANTS[variant]
    if small_path:
        onnx_export.LARGE_MODEL_BYTES = 1 << 62
    start = rss_bytes()
    tracker.enter("export")
    t0 = time.perf_counter()
    record = export_onnx(model, inputs, Path(tmp) / "m.onnx", exporter=exporter)
    seconds = time.perf_counter() - t0
    tracker.leave("export")
    size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    for p in Path(tmp).iterdir():
        p.unlink()
    os.rmdir(tmp)
    weights = sum(p.numel() * 4 for p in model.parameters())
    return {"model": name, "exporter": variant, "seconds": round(seconds, 1), "start_rss_mb": round(start / 1024**2),
            "peak_rss_mb": tracker.peaks_mb["export"],
            "peak_above_start_mb": round(tracker.peaks_mb["export"] - start / 1024**2),
            "weight_mb": round(weights / 1024**2), "nodes": record["nodes"], "onnx_bytes": size,
            "onnxslim": record.get("onnxslim"), "external_data": record["external_data"]}


def _example_inputs(flags: list[str]):
    import torch

    from prune2deploy.context import ExampleInputs

    if flags[0] == "--input-shape":
        return ExampleInputs((torch.randn(*map(int, flags[1].split(","))),), {})
    names = [flags[i + 1].split(":")[0] for i in range(0, len(flags), 2)]
    return ExampleInputs((), {n: torch.ones(1, 128, dtype=torch.int64) for n in names})


STAGES = ("load", "measure", "prune_channels", "measure_pruned", "export_dense", "export_pruned", "fidelity",
          "park", "release", "verify_dense", "verify_pruned", "benchmark", "unpark")


def _stages(rows: list[dict]) -> list[str]:
    """The stages some row ran (the CLI frees the torch models, `release`; the API parks them, `park`/`unpark`)."""
    return [s for s in STAGES if any(s in r.get("stages_s", {}) for r in rows)]


def _fmt(v, spec: str = "{:.0f}") -> str:
    return spec.format(v) if isinstance(v, (int, float)) else "-"


def markdown(rows: list[dict], meta: dict) -> str:
    ok = [r for r in rows if "error" not in r]
    out = [f"Scale sweep {meta['date']} on {meta['machine']}: ratio 0.5, ort-cpu, batch 1, random weights, "
           f"benchmark {meta['bench_seconds']} s, --graph-budget-s {meta['graph_budget_s']}. "
           "**Wall times were measured under load** (the 2 cores shared with other jobs; 1-minute load "
           "average before/after each row in the last column): they show growth, not a quiet machine's speed.", "",
           "| model | params | FP32 weights MB | peak RSS MB | peak / weights | sampled peak MB | compile s (CPU s) | "
           "speedup | MAC reduction | mode | exporter dense/pruned | external data | verified (max rel err) | load avg |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | failed: {r['error']} |" + " - |" * 12)
            continue
        out.append(" | ".join([
            f"| {r['model']}", f"{r['params'] / 1e6:.0f}M", _fmt(r["weight_bytes"] / 1024**2),
            _fmt(r["peak_rss_mb"]), f"**{r['peak_over_weights']:.2f}**", _fmt(r["sampled_peak_rss_mb"]),
            f"{_fmt(r['compile_wall_s'])} ({_fmt(r['process_cpu_s'])})", _fmt(r["speedup"], "{:.2f}x"), _fmt(r["mac_reduction"], "{:.2f}x"),
            r["pruning_mode"], "/".join(r["exporters"].values()),
            "/".join("yes" if v else "no" for v in r["external_data"].values()),
            f"{r['verification']['passed']} ({r['verification']['max_rel_err']:.1e})",
            f"{r['load_avg_1m'][0]}/{r['load_avg_1m'][1]} |"]))
    for title, key in (("Peak RSS per stage, MB", "stages_peak_rss_mb"), ("Wall time per stage, s (under load)", "stages_s"),
                       ("CPU time per stage, s (all threads; less sensitive to load than wall time)", "stages_cpu_s")):
        out += ["", title, "", "| model | " + " | ".join(_stages(ok)) + " |", "|---|" + "---|" * len(_stages(ok))]
        for r in ok:
            out.append(f"| {r['model']} | " + " | ".join(_fmt(r[key].get(s), "{:.0f}" if key == "stages_peak_rss_mb" else "{:.1f}")
                                                         for s in _stages(ok)) + " |")
    for label, names in (("ViT", VIT_SERIES), ("BERT", BERT_SERIES)):
        out += _growth(label, [r for r in ok if r["model"] in names])
    return "\n".join(out) + "\n"


def _growth(label: str, series: list[dict]) -> list[str]:
    """CPU time per stage relative to the series' first model, beside its parameter and MACs ratios."""
    if len(series) < 2:
        return []
    out = ["", f"Growth of CPU time per stage along the {label} series, relative to {series[0]['model']} (a stage "
           "grows at most linearly when its ratio is not above the parameter ratio; a stage that runs the model grows "
           "with its MACs, which grow faster than parameters when the token count grows)", "",
           "| model | tokens | params ratio | MACs ratio | " + " | ".join(_stages(series)) + " |",
           "|---|---|---|---|" + "---|" * len(_stages(series))]
    base = series[0]
    for r in series[1:]:
        cells = []
        for s in _stages(series):
            a, b = base["stages_cpu_s"].get(s), r["stages_cpu_s"].get(s)
            cells.append(_fmt(b / a, "{:.2f}") if a and b else "-")
        macs = _fmt(r["macs"] / base["macs"], "{:.2f}") if r.get("macs") and base.get("macs") else "-"
        out.append(f"| {r['model']} | {r.get('tokens', '-')} | {r['params'] / base['params']:.2f} | {macs} | "
                   + " | ".join(cells) + " |")
    return out


def exporters_markdown(rows: list[dict], meta: dict) -> str:
    out = [f"Exporter comparison {meta['date']} on {meta['machine']} (dense model, p2d's export_onnx, "
           "one process per row; seconds under load)", "",
           "| model | weights MB | exporter | peak above start MB | peak / weights | s | nodes | onnxslim | external data |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | - | {r['exporter']} | failed: {r['error']} | - | - | - | - | - |")
            continue
        slim = r["onnxslim"] or {}
        slim_text = (f"{slim.get('nodes_before')} -> {slim.get('nodes_after')}" if "nodes_before" in slim
                     else "skipped")
        out.append(f"| {r['model']} | {r['weight_mb']} | {r['exporter']} | {r['peak_above_start_mb']} | "
                   f"{r['peak_above_start_mb'] / r['weight_mb']:.2f} | {r['seconds']} | {r['nodes']} | {slim_text} | "
                   f"{r['external_data']} |")
    return "\n".join(out) + "\n"


def _spawn_export(name: str, exporter: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        proc = subprocess.run([sys.executable, str(HERE), "--one-export", name, exporter, "--json-out", fh.name],
                              capture_output=True, text=True, cwd=REPO, timeout=ROW_TIMEOUT_S,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            return {"model": name, "exporter": exporter, "error": (lines[-1] if lines else "failed")[:300]}
        return json.loads(Path(fh.name).read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help=f"comma-separated from {','.join(MODELS)} (default: all; --exporters: "
                                     "vit_b_16,bert_base)")
    ap.add_argument("--bench-seconds", type=float, default=8.0)
    ap.add_argument("--graph-budget-s", type=float, default=300.0,
                    help="the whole-model graph's budget; the default 30 s falls back to block-local on a busy machine")
    ap.add_argument("--exporters", action="store_true", help="compare the exporters on the dense models instead")
    ap.add_argument("--one-export", nargs=2, metavar=("MODEL", "EXPORTER"), help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.one_export:
        Path(args.json_out).write_text(json.dumps(export_worker(*args.one_export)))
        return 0
    default = "vit_b_16,bert_base" if args.exporters else ",".join(MODELS)
    models = (args.models or default).split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB",
            "bench_seconds": args.bench_seconds, "graph_budget_s": args.graph_budget_s}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem, render = ("scale_exporters", exporters_markdown) if args.exporters else ("scale", markdown)
    rows = []
    for name in models:
        if args.exporters:
            new = [_spawn_export(name, variant) for variant in EXPORT_VARIANTS]
        else:
            new = [run_compile(name, args.bench_seconds, args.graph_budget_s)]
        for row in new:
            rows.append(row)
            print(json.dumps(row), flush=True)
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (out / f"{stem}.md").write_text(render(rows, meta))
    print(render(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
