"""The `p2d` command: a thin layer over the Python API. Each command's docstring is its --help."""
from __future__ import annotations

import argparse
import errno
import inspect
import json
import logging
import os
import sys
import warnings

from prune2deploy import __version__
from prune2deploy.errors import EXIT_INTERNAL, EXIT_USER, P2DError

# Flags naming files or directories a compile reads (label -> argparse dest). --out, --junit and
# $GITHUB_STEP_SUMMARY may never be or contain them: a new path flag is protected by adding it here.
INPUT_PATH_FLAGS = {"MODEL": "model", "--weights": "weights", "--example-inputs": "example_inputs",
                    "--data": "data", "--val-data": "val_data", "--calib-data": "calib_data",
                    "--config": "recipe_path"}


def input_paths(args) -> dict:
    """label -> path of every input path the command line or recipe gave (see INPUT_PATH_FLAGS)."""
    return {label: getattr(args, dest) for label, dest in INPUT_PATH_FLAGS.items() if getattr(args, dest, None)}


def cmd_compile(args) -> int:
    """Prune MODEL, export dense and pruned ONNX, verify both against torch, benchmark them, write a report.

    MODEL is a torch.save(model) file, package.module:callable, file.py:callable, torchvision:NAME,
    timm:NAME or hf:PATH (or `model` in a --config recipe; flags override the recipe).
    Output: DIR/{dense.onnx, pruned.onnx, pruned.pt, report.json, report.md, manifest.json}, replaced
    atomically (a failed or killed compile leaves the previous output untouched). With several
    --target flags, each target gets DIR/<target>/. DIR must be new, empty, or written by p2d
    (its manifest.json lists everything in it), and must not hold the model or any other input.
    With --data (FILE.pt, FILE.npz, module:callable, text:FILE, images:DIR) or --val-data, the report's
    `accuracy` holds --metric for the dense and pruned models on validation samples (gate on accuracy.drop).
    Exit codes: 0 ok, 1 internal error, 2 bad input or missing library, 3 a --gate failed.
    """
    from pathlib import Path

    from prune2deploy.runtime import distributed
    from prune2deploy.artifacts.cache import default_dir as default_cache_dir
    from prune2deploy.errors import P2DError
    from prune2deploy.report.gates import parse_gate, raise_if_failed
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.report.junit import append_step_summary, write_junit_runs
    from prune2deploy.model.loading import load_model
    from prune2deploy.pipeline import compile
    from prune2deploy.runtime.progress import Progress
    from prune2deploy.config.recipe import compile_options, resolved_recipe
    from prune2deploy.runtime.watchdog import Limits

    gates = [parse_gate(g) for g in args.gate or []]
    options = {t: compile_options(args, t).validate() for t in args.targets}  # flags first: fail fast
    from prune2deploy.search.budget_pass import refuse_ratio_with_budget

    refuse_ratio_with_budget(next(iter(options.values())),
                             {f for f in ("ratio", "head_ratio") if args.sources.get(f) != "default"})
    protected = {**input_paths(args), "the cache directory": args.cache_dir or default_cache_dir()}
    if args.out:  # without --out, the directory is named after the model: checked once it is loaded
        _check_outputs(args, Path(args.out), protected, bool(gates))
    limits = Limits.from_args(args.stage_timeout_s, args.max_memory_gb)
    progress = Progress(enabled=False if args.json else None, limits=limits)
    with progress.stage("load", f"loading {args.model}"):
        loaded = load_model(args.model, args.weights, tuple(args.trust or ()), args.trust_pickle)
        inputs = build_example_inputs(loaded.model, args.input_shape, args.input or [], args.example_inputs,
                                      seed=args.seed or 0)
    out_root = Path(args.out or Path("p2d-out") / loaded.name)
    if not args.out:
        _check_outputs(args, out_root, protected, bool(gates))
    runs, first_error, summaries = [], None, []
    for i, (target, opts) in enumerate(options.items()):
        out_dir = out_root if len(options) == 1 else out_root / target
        try:
            result = compile(loaded.model, inputs, out_dir=out_dir, model_name=loaded.name,
                             progress=progress.fresh(), options=opts, recipe=resolved_recipe(args),
                             cache_dir=args.cache_dir, use_cache=not args.no_cache, gates=gates,
                             protected_paths=protected, cache_max_gb=args.cache_max_gb,
                             keep_models=i < len(options) - 1)  # the last target's models are not needed after
            report, results = result.report, result.gate_results
            if not distributed.is_main():
                return 0  # torchrun: rank 0 reports
        except P2DError as exc:
            if len(options) == 1 or exc.exit_code != 2 or not getattr(exc, "report", None):
                raise
            first_error, report, results = first_error or exc, exc.report, []  # e.g. no TensorRT: go on
        runs.append((report, results))
        summaries.append(_print_target(report, out_dir, results, args.json))
    if args.junit:
        write_junit_runs(args.junit, runs)
    if not args.no_step_summary and gates:
        append_step_summary("\n\n".join(summaries))
    if first_error:
        raise first_error
    raise_if_failed([r for _, results in runs for r in results])
    return 0


def _check_outputs(args, out_root, protected: dict, step_summary: bool) -> None:
    """Before any work: every path the compile will write may be written (ownership.py, junit.py)."""
    from prune2deploy.report.junit import check_junit_path, check_step_summary
    from prune2deploy.artifacts.ownership import check_out_dir

    check_out_dir(out_root, protected)  # several targets: DIR/<target>/ are checked with DIR
    if args.junit:
        check_junit_path(args.junit, [out_root])
    if step_summary and not args.no_step_summary:
        check_step_summary(protected, [out_root])


def _print_target(report: dict, out_dir, gate_results, as_json: bool) -> str:
    """Print one target's section (text or JSON); return it as Markdown for the CI step summary."""
    from prune2deploy.report.gates import gate_markdown, gate_table
    from prune2deploy.report.render import comparison_rows, markdown_table, summary_lines, text_table

    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for w in report["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        print(f"{report['model']} on {report['target']} ({report['device']})")
        print(text_table(comparison_rows(report)))
        for line in summary_lines(report):
            print(line)
        if report.get("cache", {}).get("hit"):
            print(f"cache hit: reused {', '.join(report['cache']['reused'])}; only the benchmark ran again")
        if gate_results:
            print(gate_table(gate_results), file=sys.stderr)
        print(f"wrote {out_dir}/ (report.md, report.json, manifest.json, ONNX files, pruned.pt)")
    md = [f"## p2d: {report['model']} on {report['target']}", "", markdown_table(comparison_rows(report)), ""]
    md += [f"- {line}" for line in summary_lines(report)]
    if gate_results:
        md += ["", gate_markdown(gate_results)]
    return "\n".join(md)


def cmd_sensitivity(args) -> int:
    """Prune one group at a time (channel groups; attention heads and FFN blocks in transformers) at each of
    --ratios; measure --metric on validation data (without data: fidelity to the dense model on random inputs,
    labelled as such) and the latency saved on ort-cpu (or --macs). Writes DIR/sensitivity.json, sensitivity.md
    (a table, most fragile group first) and sensitivity.png (with matplotlib: metric vs ratio per group, and
    latency saved vs ratio). Latency tables are cached in --cache-dir.
    """
    from pathlib import Path

    from prune2deploy.errors import user_error
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model
    from prune2deploy.config.options import CompileOptions
    from prune2deploy.runtime.progress import Progress
    from prune2deploy.search.sensitivity import parse_ratios, sensitivity

    if not args.model:
        raise user_error("no model given", "p2d sensitivity MODEL --input-shape ... --out DIR")
    ratios = parse_ratios(args.ratios)
    fields = {k: getattr(args, k) for k in ("data", "val_data", "val_split", "calib_data", "metric", "batch_size",
                                            "max_length", "image_size", "image_mean", "image_std", "round_to",
                                            "threads", "workers", "ray_address") if getattr(args, k) is not None}
    options = CompileOptions(criterion=args.criterion, ignore=list(args.ignore or []), seed=args.seed, **fields)
    options.validate()
    protected = {label: path for label, path in input_paths(args).items()}
    from prune2deploy.artifacts.ownership import check_out_dir

    check_out_dir(Path(args.out), protected)
    loaded = load_model(args.model, args.weights, tuple(args.trust or ()), args.trust_pickle)
    inputs = build_example_inputs(loaded.model, args.input_shape, args.input or [], args.example_inputs,
                                  seed=args.seed)
    result = sensitivity(loaded.model, inputs, args.out, options, ratios, args.macs, args.cache_dir, protected,
                         Progress(enabled=False if args.json else None))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{loaded.name}: {len(result['groups'])} groups, metric {result['metric']} (dense "
          f"{result['dense_score']:.4g}), {result['cost']} saved in {result['unit']}; most fragile first:")
    for row in result["groups"]:
        worst = row["points"][-1]
        print(f"  {row['name']:<45} mean drop {row['mean_drop']:.4g}; at {worst['ratio']:g}: "
              f"{worst['score']:.4g}, saves {worst['saved']:.3g} {result['unit']}")
    print(f"wrote {args.out}/ (sensitivity.json, sensitivity.md, sensitivity.png, manifest.json)")
    return 0


def cmd_build(args) -> int:
    """Finish a TensorRT compile on a machine with TensorRT and a GPU: build the planned engines,
    benchmark them (CUDA events) and update OUT_DIR's report."""
    from pathlib import Path

    from prune2deploy.cli.build import build_out_dir

    report = build_out_dir(Path(args.out_dir))
    _print_target(report, args.out_dir, [], args.json)
    return 0


def cmd_verify(args) -> int:
    """Re-check OUT_DIR: every artifact against manifest.json's sha256, and every ONNX file against the
    torch outputs recorded at compile time (onnxruntime). Exit 0 when all holds."""
    from pathlib import Path

    from prune2deploy.artifacts.manifest import verify_out_dir

    result = verify_out_dir(Path(args.out_dir))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for line in result["lines"]:
            print(line)
    return 0


def cmd_bench(args) -> int:
    """Re-benchmark the dense.onnx and pruned.onnx of an existing output directory on this machine."""
    from pathlib import Path

    from prune2deploy.cli.bench import bench_out_dir

    return bench_out_dir(Path(args.out_dir), args)


def cmd_cache(args) -> int:
    """Show (info) or empty (clear) the compile cache. Only p2d's own entries are counted and deleted:
    directories named by their key that hold p2d's entry marker; anything else there is left alone."""
    from pathlib import Path

    from prune2deploy.artifacts import cache, cache_limits

    cache_dir = Path(args.cache_dir) if args.cache_dir else cache.default_dir()
    if args.action == "clear":
        removed, others = cache_limits.clear(cache_dir)
        result = {"cache_dir": str(cache_dir), "removed_entries": len(removed),
                  "removed_bytes": sum(e.bytes for e in removed), "other_items_kept": others}
        text = (f"removed {len(removed)} entries ({result['removed_bytes'] / 1e6:.1f} MB) from {cache_dir}"
                + (f"; kept {others} items p2d did not write" if others else ""))
    else:
        found, others = cache_limits.entries(cache_dir)
        result = {"cache_dir": str(cache_dir), "entries": len(found), "bytes": sum(e.bytes for e in found),
                  "max_bytes": cache_limits.max_bytes(None), "other_items": others}
        text = (f"{cache_dir}: {len(found)} entries, {result['bytes'] / 1e6:.1f} MB "
                f"(compiles evict beyond {cache_limits.DEFAULT_MAX_GB:g} GB unless --cache-max-gb says otherwise)"
                + (f"; {others} other items p2d did not write" if others else ""))
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def cmd_inspect(args) -> int:
    """Show MODEL's params, MACs, the pruning mode a compile would use and what it would prune: the prunable
    groups (the layers torch-pruning prunes together) with widths, or the blocks pruned one by one."""
    from prune2deploy.errors import user_error
    from prune2deploy.model.inputs import build_example_inputs, check_model_runs
    from prune2deploy.passes.inspect import inspect_model
    from prune2deploy.model.loading import load_model
    from prune2deploy.config.options import CompileOptions

    if not args.model:
        raise user_error("no model given", "p2d inspect MODEL --input-shape ...")
    CompileOptions(pruning_mode=args.pruning_mode, graph_budget_s=args.graph_budget_s,
                   graph_budget_gb=args.graph_budget_gb).validate()
    loaded = load_model(args.model, args.weights, tuple(args.trust or ()), args.trust_pickle)
    inputs = build_example_inputs(loaded.model, args.input_shape, args.input or [], args.example_inputs)
    check_model_runs(loaded.model, inputs)
    info = inspect_model(loaded.model, inputs, args.pruning_mode, args.graph_budget_s, args.graph_budget_gb)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{loaded.name}: {info['params']:,} params, {info['macs']:,} MACs")
    reason = f" ({info['pruning_mode_reason']})" if info["pruning_mode_reason"] else ""
    print(f"pruning mode: {info['pruning_mode']}{reason}")
    if info["attention"]:
        print(f"attention ({info['attention_kind']}): " + ", ".join(
            f"{a['name']} {a['heads']} heads" for a in info["attention"]))
    for item in info["attention_kept"]:
        print(f"left unpruned: {item['group']}: {item['reason']}")
    if info["blocks"] is not None:
        print(f"{len(info['blocks'])} blocks pruned one by one (their outputs keep their width):")
        for name in info["blocks"]:
            print(f"  {name}")
        return 0
    print(f"{len(info['groups'])} prunable groups (root layer: width; layers in the group):")
    for g in info["groups"]:
        print(f"  {g['root']}: {g['width']}; {', '.join(g['layers'])}")
    if info["output_layers"]:
        print(f"kept at full width (they produce the outputs): {', '.join(info['output_layers'])}")
    return 0


def cmd_targets(args) -> int:
    """List every target and whether it can run on this machine (with the reason when not)."""
    from prune2deploy.backends.registry import TARGETS, availability

    rows = []
    for name, spec in TARGETS.items():
        ok, reason = availability(name)
        rows.append({"target": name, "available": ok, "reason": reason, "description": spec.description,
                     "round_to": spec.round_to})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['target']:<11} {'yes' if r['available'] else 'no ':<4} round-to {r['round_to']:<3} "
              f"{r['description']}")
        print(f"{'':<16}{r['reason']}")
    return 0


def _add_model_args(p):
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="model file, package.module:callable, torchvision:NAME, hf:PATH")
    p.add_argument("--weights", help="state_dict to load into the model (weights-only)")
    p.add_argument("--trust", action="append", metavar="MODULE_PREFIX",
                   help="allow classes from this module in a model pickle (repeatable)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle the model file with full Python (runs any code in it)")
    p.add_argument("--input-shape", help="one float input, e.g. 1,3,224,224")
    p.add_argument("--input", action="append", metavar="NAME:SHAPE:DTYPE",
                   help="a named input, e.g. input_ids:1x128:int64 (repeatable)")
    p.add_argument("--example-inputs", metavar="FILE", help="tensors saved with torch.save")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_data_args(p):
    """--data, --val-data and the flags that read them (compile and sensitivity)."""
    p.add_argument("--data", metavar="SPEC", help="real samples: FILE.pt, FILE.npz, module:callable, file.py:callable, "
                   "text:FILE or images:DIR; a --val-split of it is held out for the accuracy metric")
    p.add_argument("--val-data", metavar="SPEC", help="validation samples (same forms); default: held out of --data")
    p.add_argument("--val-split", type=float, help="fraction of --data held out (seeded) when no --val-data; "
                   "default 0.1")
    p.add_argument("--calib-data", metavar="SPEC", help="samples for taylor/hessian (same forms); default: the "
                   "first batches of --data")
    p.add_argument("--metric", help="top1 | cosine | module:callable(model, batches) -> float; default top1 "
                   "with labels and class scores, else cosine to the dense model")
    p.add_argument("--batch-size", type=int, help="samples per batch of data; default 32")
    p.add_argument("--max-length", type=int, help="text: tokens per sentence at most; default 128")
    p.add_argument("--image-size", metavar="H[,W]", help="images: resize to this (default: the input's size)")
    p.add_argument("--image-mean", metavar="M[,M,M]", help="images: per-channel mean after scaling to [0, 1]")
    p.add_argument("--image-std", metavar="S[,S,S]", help="images: per-channel std after the mean")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"p2d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn):
        doc = inspect.cleandoc(fn.__doc__)
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        p.set_defaults(fn=fn)
        return p

    p = command("compile", cmd_compile)
    _add_model_args(p)
    p.add_argument("--config", metavar="TOML", help="recipe file with any of these settings; flags override it")
    p.add_argument("--target", action="append", help="deployment target (see p2d targets), repeatable; "
                   "default ort-cpu")
    p.add_argument("--out", metavar="DIR", help="output directory (default p2d-out/<model name>)")
    p.add_argument("--ratio", type=float, default=0.5, help="channel pruning ratio in [0, 1); default 0.5")
    p.add_argument("--head-ratio", type=float,
                   help="attention-head pruning ratio: each block loses ceil(R x heads) heads, keeping one "
                        "(default: --ratio)")
    p.add_argument("--criterion", default="l1", help="l1 | l2 | bn-scale | taylor | hessian | random")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across layers")
    g.add_argument("--local", dest="global_pruning", action="store_false", help="same ratio per layer (default)")
    p.add_argument("--iterative-steps", type=int, default=1, help="prune in N steps; default 1")
    p.add_argument("--round-to", type=int, help="keep channel counts multiples of N (default: the target's, "
                   "see p2d targets)")
    p.add_argument("--ignore", action="append", metavar="NAME", help="layer to leave unpruned (repeatable)")
    _add_graph_args(p)
    _add_data_args(p)
    p.add_argument("--recover", help="kd | finetune | none: distil the pruned model from the dense one on --data "
                   "(after BatchNorm re-estimation); default kd with --data, else none")
    p.add_argument("--lr", type=float, help="recovery: AdamW peak learning rate (warm-up, cosine decay); default 5e-4")
    p.add_argument("--epochs", type=int, help="recovery: passes over --data at most; default 5 (early stop on the "
                   "validation metric)")
    p.add_argument("--max-steps", type=int, help="recovery: optimiser steps at most")
    p.add_argument("--recover-minutes", type=float, help="recovery: wall-clock budget in minutes")
    p.add_argument("--eval-every", type=int, metavar="STEPS", help="recovery: validate and checkpoint every STEPS "
                   "steps too (large --data); default once per epoch")
    p.add_argument("--kd-alpha", type=float, help="weight of distillation vs cross-entropy on labels; default 0.7")
    p.add_argument("--kd-temperature", type=float, help="softmax temperature of distillation; default 2")
    p.add_argument("--kd-feature", action="append", metavar="LAYER",
                   help="also match this layer's output to the dense model's (a layer pruning kept at full width); "
                   "default: every block of an encoder, none of a classifier; `none`: outputs only")
    p.add_argument("--kd-relations", type=int, metavar="HEADS", help="also distil self-attention relations (MiniLMv2: "
                   "query, key and value relations of every BERT-style attention block, split into HEADS relation "
                   "heads); default 0: off")
    p.add_argument("--kd-augment", type=float, metavar="F", help="replace a fraction F of each training sentence's "
                   "tokens by other tokens of the batch (the teacher labels any input); default 0")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recovery from its last "
                   "checkpoint (same command and --out)")
    p.add_argument("--target-speedup", type=float, metavar="X", help="budget instead of --ratio: per-group widths "
                   "searched until dense p50 / pruned p50 on the target reaches X (latency measured on ort-cpu)")
    p.add_argument("--latency-ms", type=float, metavar="L", help="budget: the pruned model's p50 on the target")
    p.add_argument("--macs-fraction", type=float, metavar="F", help="budget: pruned MACs / dense MACs, in (0, 1)")
    p.add_argument("--budget-step", type=float, help="budget search: cost removed per greedy step, as a fraction "
                   "of the dense cost; default 0.05")
    p.add_argument("--score-steps", type=_steps_or_auto, metavar="N|auto",
                   help="budget search: distillation steps from the dense model per candidate, which is then scored by "
                   "minus the validation distillation loss (needs --data; 0: --metric after BN re-estimation only); "
                   "default auto: 20, fewer when one candidate's steps would take over 5 s (a step timed on the "
                   "dense model), 0 when fewer than 5 fit")
    p.add_argument("--tie-break-steps", type=_steps_or_auto, metavar="N|auto",
                   help="budget search: when the searched and uniform widths both meet the budget, recover each for N "
                   "steps on the training data and keep the better on validation (0: off); default auto: the "
                   "recovery's own settings, at most 1000 steps")
    p.add_argument("--workers", type=int, help="budget search: processes scoring candidates (local pool); default 1")
    p.add_argument("--ray-address", metavar="ADDR", help="budget search: score candidates on this Ray cluster "
                   "(pip install 'prune2deploy[ray]')")
    p.add_argument("--sparsity", metavar="N:M", help="lay out N:M sparse weights, e.g. 2:4")
    p.add_argument("--permute", action="store_true", help="search channel permutations before N:M masking")
    p.add_argument("--exporter", default="auto",
                   help="torch.onnx exporter: auto (default: dynamo with external data from 128 MB of weights, "
                        "else torchscript) | torchscript | dynamo")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset; default 18")
    p.add_argument("--dynamic-batch", metavar="MIN,OPT,MAX",
                   help="export with a dynamic batch axis; TensorRT engines get this optimisation profile")
    p.add_argument("--no-slim", action="store_true", help="skip the onnxslim clean-up")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max relative error ONNX vs torch; default 1e-3")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--bench-seconds", type=float, default=8.0, help="benchmark time budget; default 8")
    p.add_argument("--warmup", type=int, default=5, help="warm-up rounds before timing; default 5")
    p.add_argument("--min-iters", type=int, default=20, help="timed rounds at least; default 20")
    p.add_argument("--no-benchmark", action="store_true", help="skip the latency benchmark")
    p.add_argument("--dtype", default="fp16", help="torch-cuda compute type: fp16 | bf16; default fp16")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="torch-cuda: time without CUDA graphs (torch.compile mode default); kernel launches "
                        "then dominate small models")
    p.add_argument("--autotune", action="store_true",
                   help="torch-cuda: let Inductor autotune every GEMM/conv (max-autotune); costs minutes of "
                        "compile per model (ResNet-50 did not finish in 160 s on an H100)")
    p.add_argument("--sparsity-margin", type=float, default=0.05,
                   help="torch-cuda 2:4: a Linear goes semi-structured only when its GEMM is at least this much "
                        "faster than dense on the GPU; default 0.05")
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and random choices")
    p.add_argument("--gate", action="append", metavar="EXPR",
                   help="release gate on any numeric report field, e.g. 'speedup>=2.5' (repeatable; exit 3)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML: one test per gate and for verification")
    p.add_argument("--no-step-summary", action="store_true", help="do not append to $GITHUB_STEP_SUMMARY")
    p.add_argument("--stage-timeout", dest="stage_timeout_s", type=float,
                   help="seconds any one stage may take (default 1800)")
    p.add_argument("--max-memory-gb", type=float, help="stop when the compile's memory exceeds this "
                   "(default: 85%% of the machine)")
    p.add_argument("--cache-dir", help="cache of pruned models and ONNX files (default ~/.cache/prune2deploy)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--cache-max-gb", type=float, help="evict least-recently-used cache entries beyond this "
                   "size (default 10)")

    p = command("sensitivity", cmd_sensitivity)
    _add_model_args(p)
    _add_data_args(p)
    p.add_argument("--out", metavar="DIR", required=True, help="output directory (new, empty or written by p2d)")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                   help="ratios removed from each group, comma-separated; default 0.1,...,0.9")
    p.add_argument("--macs", action="store_true", help="MACs saved instead of latency measured on ort-cpu")
    p.add_argument("--round-to", type=int,
                   help="kept widths are multiples of N (default: ort-cpu's: 16 on an AVX-512 CPU, else 8)")
    p.add_argument("--criterion", default="l1", help="l1 | l2 | bn-scale | random (which channels go)")
    p.add_argument("--ignore", action="append", metavar="NAME", help="layer to leave unpruned (repeatable)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--workers", type=int, default=1, help="processes scoring candidates; default 1")
    p.add_argument("--ray-address", metavar="ADDR", help="score candidates on this Ray cluster")
    p.add_argument("--seed", type=int, default=0, help="seed for the data split and random inputs")
    p.add_argument("--cache-dir", help="where latency tables are cached (default ~/.cache/prune2deploy)")

    p = command("build", cmd_build)
    p.add_argument("out_dir", metavar="OUT_DIR", help="a directory prepared by p2d compile --target trt-*")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = command("verify", cmd_verify)
    p.add_argument("out_dir", metavar="OUT_DIR", help="a directory written by p2d compile")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = command("bench", cmd_bench)
    p.add_argument("out_dir", metavar="OUT_DIR", help="a directory written by p2d compile")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--bench-seconds", type=float, default=8.0, help="benchmark time budget; default 8")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = command("cache", cmd_cache)
    p.add_argument("action", choices=("info", "clear"), help="info: entries and size; clear: delete p2d's entries")
    p.add_argument("--cache-dir", help="the cache directory (default $P2D_CACHE_DIR or ~/.cache/prune2deploy)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = command("inspect", cmd_inspect)
    _add_model_args(p)
    _add_graph_args(p)

    p = command("targets", cmd_targets)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _steps_or_auto(value: str) -> int | None:
    """--score-steps, --tie-break-steps: a count, or `auto` (None: the default)."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a step count or auto") from None


def _add_graph_args(p) -> None:
    """How the dependency graph is built: compile and inspect take the same flags."""
    p.add_argument("--pruning-mode", default="auto", metavar="MODE",
                   help="auto (default): the whole model's dependency graph, block by block when that is too "
                        "costly or cannot be built | global: refuse instead | block-local")
    p.add_argument("--graph-budget-s", type=float, default=30.0, metavar="S",
                   help="seconds the whole model's graph may take (each block's: a third); default 30")
    p.add_argument("--graph-budget-gb", type=float, default=4.0, metavar="GB",
                   help="GB of memory a dependency graph may grow by; default 4")


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("torch").setLevel(logging.ERROR)
    logging.disable(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if debug:
        logging.getLogger("prune2deploy").setLevel(logging.DEBUG)  # compilers' logs too (torch-cuda)
    else:
        _quiet_libraries()
    try:
        if args.fn is cmd_compile:
            from prune2deploy.config.recipe import load_recipe, merge

            args = merge(load_recipe(args.config) if args.config else None, args, parser, argv)
        return args.fn(args)
    except P2DError as exc:
        if debug:
            raise
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"error: {exc.strerror}: {exc.filename or 'while writing'} (hint: free space or choose another "
              f"--out; the previous output directory is untouched)", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("error: interrupted; the previous output directory is untouched", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
