"""`compile`: the whole pipeline: check -> prune -> export -> verify -> benchmark -> report.

Every stage is timed; the output directory appears only when everything succeeded.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .context import CompileContext, ExampleInputs
from .errors import MissingDependency, VerificationError, user_error
from .inputs import check_model_runs, random_like
from .measure import count_macs_params
from .options import CompileOptions
from .outdir import check_writable, locked, publish_dir, workspace, write_atomic
from .passes.prune_channels import PruneChannels, resolve_layers
from .progress import Progress
from .report import render_markdown
from .targets import TARGETS
from .verify import fidelity, verify_onnx


@dataclass
class CompileResult:
    report: dict
    out_dir: Path
    artifacts: dict = field(default_factory=dict)  # name -> Path
    dense: nn.Module | None = None
    pruned: nn.Module | None = None


def as_example_inputs(example_inputs) -> ExampleInputs:
    if isinstance(example_inputs, ExampleInputs):
        return example_inputs
    if isinstance(example_inputs, torch.Tensor):
        return ExampleInputs((example_inputs,), {})
    if isinstance(example_inputs, dict):
        return ExampleInputs((), dict(example_inputs))
    if isinstance(example_inputs, (tuple, list)):
        return ExampleInputs(tuple(example_inputs), {})
    raise user_error(f"example_inputs must be a tensor, tuple or dict of tensors, not {type(example_inputs).__name__}")


def compile(model: nn.Module, example_inputs, target: str | None = None, out_dir: str | Path | None = None,
            model_name: str = "model", calib_batches: list | None = None, progress: Progress | None = None,
            options: CompileOptions | None = None, **option_overrides) -> CompileResult:
    """Prune `model`, export dense and pruned ONNX, verify them, benchmark both on `target`, write a report.

    Keyword options are the fields of CompileOptions (ratio, criterion, round_to, ignore, ...).
    Returns the report and the artifact paths; raises UserError (exit 2) for bad input.
    """
    started = time.perf_counter()
    options = dataclasses.replace(options or CompileOptions(), **option_overrides)
    if target is not None:
        options.target = target
    options.validate()
    spec = TARGETS[options.target]
    if options.round_to is None:
        options.round_to = spec.sparse_round_to if options.sparsity else spec.round_to
    progress = progress or Progress(enabled=False)
    inputs = as_example_inputs(example_inputs)
    out_dir = Path(out_dir or Path("p2d-out") / model_name)
    model = model.eval()
    torch.manual_seed(options.seed)

    # Everything that can be the user's fault is checked before anything is written.
    check_model_runs(model, inputs)
    resolve_layers(model, options.ignore)
    check_writable(out_dir)
    prune = PruneChannels(options.ratio, options.criterion, options.global_pruning, options.iterative_steps,
                          options.round_to, options.ignore, options.head_ratio)
    sparsify = None
    if options.sparsity:
        from .passes.sparsity import SparsityPass, parse_pattern

        n, m = parse_pattern(options.sparsity)
        sparsify = SparsityPass(n=n, m=m, permute=options.permute)

    with locked(out_dir), workspace() as work:
        ctx = CompileContext(inputs, options, calib_batches or [])
        report = _new_report(options, model_name)
        driver = _driver(spec)
        report["device"] = driver.device()
        models = {"dense": model}
        with progress.stage("measure", "measuring dense model"):
            facts = {"dense": count_macs_params(model, inputs)}
        pruned = copy.deepcopy(model)
        _run_pass(prune, pruned, ctx, progress)
        models["pruned"] = pruned.eval()
        if sparsify:
            sparse = copy.deepcopy(pruned)
            _run_pass(sparsify, sparse, ctx, progress)
            models["pruned_2to4"] = sparse.eval()
        with progress.stage("measure_pruned", "measuring pruned model"):
            facts.update({name: count_macs_params(m, inputs) for name, m in models.items() if name != "dense"})
        report["passes"] = ctx.records
        report["layers"] = ctx.records["prune_channels"]["layers"]

        artifacts = driver.build(models, ctx, work, progress, report)
        for name in models:
            if name != "dense":
                torch.save(models[name], work / f"{name}.pt")
                artifacts[f"{name}.pt"] = work / f"{name}.pt"
        torch.save(dict(zip(inputs.names, inputs.tensors())), work / "example_inputs.pt")
        artifacts["example_inputs.pt"] = work / "example_inputs.pt"

        check_sets = [inputs] + [random_like(inputs, seed=options.seed + 1 + i)
                                 for i in range(options.verify_random_inputs)]
        with progress.stage("fidelity", "comparing pruned to dense"):
            fidelity_sets = [inputs] + [b for b, _ in ctx.calib_batches] + check_sets[1:]
            report["fidelity"] = fidelity(model, models["pruned"], fidelity_sets)
            if "pruned_2to4" in models:
                report["fidelity_2to4"] = fidelity(model, models["pruned_2to4"], fidelity_sets)
        report["verification"] = driver.verify(models, artifacts, check_sets, options, progress)
        report["models"] = {name: {"params": params, "macs": macs, **driver.model_facts(artifacts, name)}
                            for name, (macs, params) in facts.items()}
        dense_macs, dense_params = facts["dense"]
        pruned_macs, pruned_params = facts["pruned"]
        report["mac_reduction"] = dense_macs / pruned_macs if pruned_macs else None
        report["param_reduction"] = dense_params / pruned_params if pruned_params else None
        report["speedup"] = report["efficiency"] = None

        ok, reason = driver.availability()
        if not report["verification"]["passed"]:
            v = report["verification"]
            raise VerificationError(
                f"ONNX output {v['worst_output']} of the {v['worst_model']} model differs from torch: "
                f"max relative error {v['max_rel_err']:.2e} > tolerance {v['tolerance']:.0e}",
                "raise --tolerance if this is expected, or try --exporter dynamo / another --opset")
        if not ok:
            report["status"] = "prepared"
            report["next_step"] = reason
        elif not options.skip_benchmark:
            bench = driver.benchmark(artifacts, inputs, options, progress)
            _add_benchmark(report, bench)
        report["status"] = report.get("status", "complete")
        _finish_report(report, progress, started)
        write_atomic(work / "report.json", json.dumps(report, indent=2, default=_jsonable) + "\n")
        write_atomic(work / "report.md", render_markdown(report))
        publish_dir(work, out_dir)
    artifacts = {name: out_dir / Path(path).name for name, path in artifacts.items()}
    artifacts.update({"report.json": out_dir / "report.json", "report.md": out_dir / "report.md"})
    result = CompileResult(report, out_dir, artifacts, model, models["pruned"])
    if not ok:
        raise MissingDependency(f"{options.target}: artifacts prepared in {out_dir}, but {reason}",
                                f"p2d build {out_dir}")
    return result


def _run_pass(p, model, ctx, progress) -> None:
    with progress.stage(p.name, f"pass {p.name}"):
        ctx.records[p.name] = p.run(model, ctx)
        p.ensure(model, ctx)


def _add_benchmark(report: dict, bench: dict) -> None:
    stats = bench["stats"]
    for name, s in stats.items():
        report["models"][name]["latency_ms"] = s
    report["speedup"] = stats["dense"]["p50"] / stats["pruned"]["p50"]
    if "pruned_2to4" in stats:
        report["speedup_2to4"] = stats["dense"]["p50"] / stats["pruned_2to4"]["p50"]
    if report["mac_reduction"]:
        report["efficiency"] = report["speedup"] / report["mac_reduction"]
    report["benchmark"] = {k: v for k, v in bench.items() if k not in ("stats", "warnings")}
    report["warnings"].extend(bench["warnings"])


def _finish_report(report: dict, progress, started: float) -> None:
    report["stages_s"] = dict(progress.times)
    report["wall_s"] = round(time.perf_counter() - started, 3)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _driver(spec):
    """The pipeline's side of a target: build artifacts, verify them, benchmark them."""
    if spec.backend == "ort":
        from .drivers.ort_cpu import OrtCpuDriver

        return OrtCpuDriver()
    if spec.backend == "tensorrt":
        from .drivers.tensorrt import TensorRtDriver

        return TensorRtDriver(spec.name)
    from .drivers.torch_cuda import TorchCudaDriver

    return TorchCudaDriver()


def _new_report(options: CompileOptions, model_name: str) -> dict:
    from importlib.metadata import version

    import onnx
    import onnxruntime

    return {
        "p2d_version": __version__, "model": model_name, "target": options.target, "device": None,
        "versions": {"torch": torch.__version__, "torch_pruning": version("torch-pruning"),
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "options": options.resolved(), "warnings": [],
    }


def _jsonable(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj
    return str(obj)
