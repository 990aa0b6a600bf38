"""`p2d compile`: the pipeline over every --target, then the table, gates, JUnit and the CI step summary."""
from __future__ import annotations

import json
import sys

from prune2deploy.cli.flags import input_paths


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
    from prune2deploy.config.values import parse_gate
    from prune2deploy.report.gates import raise_if_failed
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.report.junit import append_step_summary, write_junit_runs
    from prune2deploy.model.loading import load_model
    from prune2deploy.pipeline import Output, compile
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
            output = Output(cache_dir=args.cache_dir, use_cache=not args.no_cache, protected_paths=protected,
                            cache_max_gb=args.cache_max_gb,
                            keep_models=i < len(options) - 1)  # the last target's models are not needed after
            searched = opts.max_drop is not None and not opts.budget_given() and \
                all(args.sources.get(f) == "default" for f in ("ratio", "head_ratio"))
            result = compile(loaded.model, inputs, out_dir=out_dir, options=opts, output=output, gates=gates,
                             recipe=resolved_recipe(args), model_name=loaded.name, progress=progress.fresh(),
                             search=searched)
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
