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
from prune2deploy.cli.flags import input_paths, options_from_args
from prune2deploy.errors import EXIT_INTERNAL, EXIT_USER, P2DError

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
    from prune2deploy.runtime.progress import Progress
    from prune2deploy.pipeline import sensitivity
    from prune2deploy.search.sensitivity import parse_ratios

    if not args.model:
        raise user_error("no model given", "p2d sensitivity MODEL --input-shape ... --out DIR")
    ratios = parse_ratios(args.ratios)
    options = options_from_args(args, "sensitivity").validate()
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

    from prune2deploy.backends.onnx.recheck import verify_out_dir

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

    if not args.model:
        raise user_error("no model given", "p2d inspect MODEL --input-shape ...")
    options_from_args(args, "inspect").validate()
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


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags come from the settings table (config/settings.py) through cli/flags.py."""
    from prune2deploy.cli.flags import add_flags

    parser = argparse.ArgumentParser(prog="p2d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"p2d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, *positionals):
        doc = inspect.cleandoc(fn.__doc__)
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        for dest, kwargs in positionals:
            p.add_argument(dest, **kwargs)
        add_flags(p, name)
        p.set_defaults(fn=fn)
        return p

    out_dir = ("out_dir", {"metavar": "OUT_DIR", "help": "a directory written by p2d compile"})
    command("compile", cmd_compile)
    command("sensitivity", cmd_sensitivity)
    command("build", cmd_build, ("out_dir", {"metavar": "OUT_DIR",
                                             "help": "a directory prepared by p2d compile --target trt-*"}))
    command("verify", cmd_verify, out_dir)
    command("bench", cmd_bench, out_dir)
    command("cache", cmd_cache, ("action", {"choices": ("info", "clear"),
                                            "help": "info: entries and size; clear: delete p2d's entries"}))
    command("inspect", cmd_inspect)
    command("targets", cmd_targets)
    return parser


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
