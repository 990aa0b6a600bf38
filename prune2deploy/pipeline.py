"""The conductors: `compile` (check -> prune -> (2:4) -> export -> verify -> benchmark -> gates -> report),
`sensitivity` (each group pruned alone) and `finish` (a compile prepared where the target could not run).

Every stage is timed and bounded; the output directory appears only when everything succeeded.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.artifacts import cache, cache_limits
from prune2deploy.runtime import distributed
from prune2deploy.data.prepare import measure_accuracy, prepare_data
from prune2deploy.context import CompileContext, ExampleInputs
from prune2deploy.errors import MissingDependency, UserError, VerificationError, user_error
from prune2deploy.model.inputs import check_model_runs, random_like
from prune2deploy.artifacts.manifest import REFERENCE, save_reference, tool_versions, write_manifest
from prune2deploy.model.facts import count_macs_params
from prune2deploy.config.options import CompileOptions
from prune2deploy.artifacts.outdir import check_space, check_writable, locked, publish_dir, workspace, write_atomic
from prune2deploy.artifacts.ownership import check_out_dir
from prune2deploy.artifacts.parking import PARK_FILE, parking
from prune2deploy.search.sensitivity import RATIOS, measure_sensitivity
from prune2deploy.report.sensitivity import PLOT as SENSITIVITY_PLOT, markdown as sensitivity_markdown, plot_sensitivity
from prune2deploy.search.budget_pass import budget_pass, refuse_ratio_with_budget
from prune2deploy.precision.deployed import RunnerModule
from prune2deploy.precision.floor import AccuracyFloor
from prune2deploy.precision.choose import calibration_feeds, precision_check_sets, resolve as resolve_precision
from prune2deploy.passes.prune_channels import PruneChannels, resolve_layers, skipped_warnings
from prune2deploy.recovery.recover_pass import recovery_method, recovery_pass
from prune2deploy.report.recovery import add_to_report
from prune2deploy.runtime.progress import Progress
from prune2deploy.report.fields import add_benchmark, evaluate_gates, finish_report, new_report
from prune2deploy.report.render import render_markdown
from prune2deploy.report.search import add_search
from prune2deploy.search import max_drop as max_drop_search
from prune2deploy.search.executor import make_executor
from prune2deploy.report.budget import add_budget, finish_budget
from prune2deploy.model.shared_weights import shared_copy, unshare
from prune2deploy.backends.registry import TARGETS
from prune2deploy.model.fidelity import fidelity, reference_outputs


FIDELITY_RANDOM_SETS = 15  # without calibration data: the example inputs plus this many random sets
FIDELITY_BUDGET_S = 20.0  # ... as many of them as fit in this time (at least 2 sets)


@dataclass
class Output:
    """What a compile may write and keep besides `out_dir`: its cache (where, whether, how large), the paths
    `out_dir` must neither be nor contain (label -> path: the model and data files), and whether the caller
    needs the torch models back (`keep_models=False`: they are freed once the ONNX files run on their own)."""

    cache_dir: str | Path | None = None
    use_cache: bool = True
    cache_max_gb: float | None = None
    protected_paths: dict | None = None
    keep_models: bool = True
    checkpoint_dir: str | Path | None = None  # recovery checkpoints here, kept after the compile (a --max-drop
    # search shares one per ratio: every runtime and precision of a ratio starts from the same recovered weights)


@dataclass
class CompileResult:
    report: dict
    out_dir: Path
    artifacts: dict = field(default_factory=dict)  # name -> Path
    dense: nn.Module | None = None
    pruned: nn.Module | None = None
    gate_results: list = field(default_factory=list)


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


def compile(model: nn.Module, example_inputs, target: str | None = None, out_dir: str | Path | None = None, *,
            options: CompileOptions | None = None, output: Output | None = None, gates: list | None = None,
            recipe: dict | None = None, model_name: str = "model", calib_batches: list | None = None,
            progress: Progress | None = None, search: bool | dict | str | None = None, **option_overrides) -> CompileResult:
    """Prune `model`, export dense and pruned ONNX, verify them, benchmark both on `target`, write a report.

    Arguments come in three groups: what to do (`options`, a CompileOptions, and keyword overrides of its
    fields: ratio, criterion, precision, ...), where it goes (`out_dir` and `output`: cache, protected paths,
    keep_models; see Output) and the release policy (`gates`, prune2deploy.report.gates.Gate objects evaluated
    into the report, and `recipe`, recorded in the manifest). `out_dir` must be new, empty or written by p2d,
    and must neither be nor contain a protected path or the cache, working, home or root directory. Returns the
    report and the artifact paths; raises UserError (exit 2) for bad input and MissingDependency when the
    target's library or device is absent (after writing every artifact that needs neither).

    With `max_drop` and neither a ratio nor a budget given (`search=None` decides from the overrides; the CLI
    passes it), the pruning ratio, runtime and precision are searched first (search/max_drop.py) and the fastest
    candidate within the floor is compiled; its report gets `search` (the search passes its record as `search`).
    `search="candidate"`: a candidate of that search, whose drop over `max_drop` is recorded, not fatal.
    """
    started = time.perf_counter()
    output = output or Output()
    cache_dir, use_cache, keep_models = output.cache_dir, output.use_cache, output.keep_models
    protected_paths, cache_max_gb = output.protected_paths, output.cache_max_gb
    options = dataclasses.replace(options or CompileOptions(), **option_overrides)
    if target is not None:
        options.target = target
    options.validate()
    if search is None:
        search = options.max_drop is not None and not options.budget_given() and \
            not {"ratio", "head_ratio"} & set(option_overrides)
    if search is True and options.max_drop is not None:
        return _search_then_compile(model, example_inputs, out_dir, options, output or Output(), gates, recipe,
                                    model_name, calib_batches, progress or Progress(enabled=False))
    search_record = search if isinstance(search, dict) else None
    spec = TARGETS[options.target]
    if options.round_to is None:
        options.round_to = spec.sparse_round_to if options.sparsity else spec.round_to
    driver = spec.driver()
    precision = resolve_precision(options.precision, options.target, driver.precisions(options),
                                  driver.auto_precision(options))
    progress = progress or Progress(enabled=False)
    inputs = as_example_inputs(example_inputs)
    out_dir = Path(out_dir or Path("p2d-out") / model_name)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_dir()
    model = model.eval()
    torch.manual_seed(options.seed)

    # Everything that can be the user's fault is checked before anything is written.
    _check_before_work(model, inputs, out_dir, {**(protected_paths or {}), "the cache directory": cache_dir})
    cache_bytes = cache_limits.max_bytes(cache_max_gb)
    with progress.stage("data", "loading data"):
        data = prepare_data(options, model, inputs, calib_batches)
    driver.precision = precision
    driver.calib_feeds = calibration_feeds(precision, data.calib, inputs, options.calib_random, options.seed,
                                           options.calib_data or options.data or "the calibration batches given")
    resolve_layers(model, options.ignore)
    refuse_ratio_with_budget(options, {k for k in ("ratio", "head_ratio") if k in option_overrides})
    prune = budget_pass(options, data, cache_dir, progress) or _prune_pass(options)
    use_cache = use_cache and distributed.world_size() == 1 and driver.cacheable
    # The content key (model, inputs, options, data, tool versions) names both the cache entry and the recovery
    # checkpoints' work area: hashed once.
    content_key = cache.cache_key(model, inputs, options, data.all_batches(), tool_versions()) \
        if use_cache or recovery_method(options, data) != "none" else None
    recover = recovery_pass(model, inputs, options, data, out_dir, progress.enabled, content_key,
                            output.checkpoint_dir)
    if not distributed.is_main():  # torchrun: the other ranks only help recover; rank 0 exports and writes
        _prune_and_recover(model, CompileContext(inputs, options, data.calib), prune, recover, progress)
        return CompileResult({"rank": distributed.rank()}, out_dir)
    sparsify = _sparsity_pass(options)
    key = content_key if use_cache else None

    with locked(out_dir), workspace() as work, parking(work / PARK_FILE, keep_models) as park:
        hit = cache.lookup(cache_dir, key) if key else None
        if hit:
            report, models, artifacts = _restore(hit, key, work, progress)
            driver.restored(report)
            if report.get("accuracy"):  # what the cached compile measured on its own test data does not count
                report["accuracy"].pop("test", None)
                if options.test_data:  # the dense torch model and the files that ship (no pruned torch model)
                    test = _test_accuracy_torch(report["accuracy"], data.metric, {"dense": model}, inputs, options,
                                                progress)
                    _test_accuracy_deployed(report["accuracy"], data.metric, test, driver, artifacts, inputs, options,
                                            progress, fp32_too=True)
            if not driver.runs_torch_models:
                _park(park, progress, model)
        else:
            report, models, artifacts = _build(model, inputs, options, data, driver, prune, recover, sparsify, search,
                                               work, progress, model_name, park)
            report["cache"] = {"hit": False, "key": key}
            if key:  # what a cache hit restores: stored below, once the compile cannot fail any more
                write_atomic(work / "report.json", json.dumps(report, indent=2, default=str) + "\n")

        ok, reason = driver.availability()
        if not ok:
            report["status"], report["next_step"] = "prepared", reason
        elif not options.skip_benchmark:
            add_benchmark(report, driver.benchmark(artifacts, inputs, options, progress))
            report["status"] = "complete"
        else:
            report["status"] = "complete"
        if park.tensors:
            with progress.stage("unpark", "loading the torch models back from disk"):
                park.restore()
        if park.failed:
            report["warnings"].append(park.failed)
        finish_budget(report)
        if search_record:
            add_search(report, search_record, work)
        gate_results = evaluate_gates(gates or [], report)
        if key:  # the entry (with files the benchmark made, e.g. TensorRT engines) only for a compile that succeeds
            made = driver.made_by_benchmark(work)
            if hit:
                cache.add(cache_dir, key, work, made)
            else:
                cache.store(cache_dir, key, work, list(artifacts) + list(cache.CACHED) + made, cache_bytes)
        finish_report(report, progress, started)
        write_atomic(work / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        write_atomic(work / "report.md", render_markdown(report))
        write_manifest(work, recipe or {"options": options.resolved()})
        publish_dir(work, out_dir)
    if recover and not output.checkpoint_dir:
        recover.checkpoints.clear()
    names = [p.name for p in out_dir.iterdir()]
    kept = not park.released
    result = CompileResult(report, out_dir, {n: out_dir / n for n in names}, model if kept else None,
                           models.get("pruned") if kept and isinstance(models, dict) else None, gate_results)
    if not ok:
        error = driver.unavailable(reason, out_dir)
        error.report = report
        raise error
    return result


def _search_then_compile(model, example_inputs, out_dir, options, output: Output, gates, recipe, model_name,
                         calib_batches, progress) -> CompileResult:
    """--max-drop without a ratio: score candidates (ratio x runtime x precision) in compiles of their own, time
    them together, compile the fastest within the floor into `out_dir` with the search in its report."""
    inputs = as_example_inputs(example_inputs)
    out_dir = Path(out_dir or Path("p2d-out") / model_name)
    cache_dir = Path(output.cache_dir) if output.cache_dir else cache.default_dir()
    _check_before_work(model.eval(), inputs, out_dir, {**(output.protected_paths or {}), "the cache directory": cache_dir})
    with progress.stage("data", "loading data"):
        data = prepare_data(options, model, inputs, calib_batches)
    key = cache.cache_key(model, inputs, dataclasses.replace(options, ratio=0.0, precision="auto", test_data=None),
                          data.all_batches(), tool_versions())
    root = cache_dir / "search" / key
    runtimes = TARGETS[options.target].driver().runtimes(options.target)
    for name, driver in runtimes.items():
        ok, why = driver.availability()
        if not ok:
            raise user_error(f"--max-drop searches by timing candidates on the target, and {name} cannot run here: "
                             f"{why}", "give --ratio (and --precision) to prepare it without a search")
    pairs = max_drop_search.configs({name: d.precisions(options) for name, d in runtimes.items()})

    def score(candidate, full: bool) -> dict:
        where = candidate.label.replace(" ", "-")
        length = "full" if full else "short"
        candidate.out_dir = str(root / f"{where}-{candidate.target}-{candidate.precision}-{length}")
        result = compile(model, inputs, out_dir=candidate.out_dir, options=_candidate_options(options, candidate, full),
                         model_name=model_name, calib_batches=calib_batches, search="candidate",
                         output=Output(cache_dir=cache_dir, use_cache=output.use_cache and full,
                                       protected_paths=output.protected_paths,
                                       checkpoint_dir=root / f"recovered-{where}-{length}"))
        return result.report

    run = max_drop_search.Search(options, score, _JsonState(root / "state.json"), progress,
                                 lambda t: TARGETS[t].driver(), inputs.as_feed(),
                                 make_executor(options.workers, options.ray_address))
    chosen, record = run.run(pairs)
    if chosen is None:
        raise max_drop_search.nothing_fits(record["why"])
    final = dataclasses.replace(_candidate_options(options, chosen, full=True), test_data=options.test_data,
                                skip_benchmark=options.skip_benchmark)
    result = compile(model, inputs, out_dir=out_dir, options=final, output=output, gates=gates, recipe=recipe,
                     model_name=model_name, calib_batches=calib_batches, progress=progress, search=record)
    for path in root.iterdir():  # the candidates' files; state.json stays (what was measured, for a rerun)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    return result


def _candidate_options(options: CompileOptions, candidate, full: bool) -> CompileOptions:
    """A --max-drop candidate's compile options: a short recovery unless `full` (the user's settings), no test data
    or benchmark; a per-group candidate is a MACs budget (the budget search's widths), without its tie-break."""
    steps = options.max_steps if full else min(options.max_steps or max_drop_search.SCORE_STEPS,
                                               max_drop_search.SCORE_STEPS)
    return dataclasses.replace(options, target=candidate.target, precision=candidate.precision, ratio=candidate.ratio,
                               test_data=None, skip_benchmark=True, max_steps=steps,
                               recover="none" if candidate.ratio == 0.0 else options.recover,
                               recover_minutes=options.recover_minutes if full else None,
                               macs_fraction=candidate.macs_fraction,
                               tie_break_steps=0 if candidate.macs_fraction else options.tie_break_steps)


class _JsonState:
    """A search's measured candidates on disk, rewritten atomically after each one (resume after a kill); an
    update re-reads the file under a lock, so pool workers scoring other ratios do not lose each other's."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:
            return {}

    def update(self, key: str, record: dict) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = self.load()
            done[key] = record
            write_atomic(self.path, json.dumps(done, indent=1))


def _build(model, inputs, options, data, driver, prune, recover, sparsify, search, work: Path, progress, model_name,
           park):
    """Passes, export and verification: everything the cache can stand in for. Once the torch models'
    reference outputs are known, drivers that run only ONNX files from then on get them parked on disk."""
    calib_batches = data.calib
    ctx = CompileContext(inputs, options, calib_batches)
    report = new_report(options, model_name)
    report["device"] = driver.device()
    models = {"dense": model}
    with progress.stage("measure", "measuring dense model"):
        facts = {"dense": count_macs_params(model, inputs)}
    models["pruned"] = _prune_and_recover(model, ctx, prune, recover, progress)
    if sparsify:
        sparse = copy.deepcopy(models["pruned"])
        _run_pass(sparsify, sparse, ctx, progress)
        models["pruned_2to4"] = sparse.eval()
    with progress.stage("measure_pruned", "measuring pruned model"):
        facts.update({name: count_macs_params(m, inputs) for name, m in models.items() if name != "dense"})
    if data.metric:
        with progress.stage("accuracy", f"measuring {data.metric.name} on validation data"):
            measure_accuracy(report, data.metric, models, data.val, data.description)
        if options.test_data:  # reported apart, read by nothing that chooses
            test_batches = _test_accuracy_torch(report["accuracy"], data.metric, models, inputs, options, progress)
        if options.max_drop is not None:  # the deployed artifacts' floor; a quantizer falls back layers to meet it
            acc = report["accuracy"]
            driver.floor = AccuracyFloor(data.metric, data.val, _static_batch(inputs), acc["dense"], options.max_drop,
                                         {n: acc[n] for n in models if acc.get(n) is not None}, _shapes(inputs))
    recovered = add_to_report(report, ctx.records.pop(recover.name), data.metric, work) if recover else {}
    report["passes"] = ctx.records
    report["layers"] = ctx.records["prune_channels"]["layers"]
    report["pruning_mode"], report["skipped"] = ctx.records["prune_channels"]["pruning_mode"], \
        ctx.records["prune_channels"]["skipped"]
    report["warnings"].extend(skipped_warnings(ctx.records["prune_channels"]))
    recovered.update(add_budget(report, ctx.records["prune_channels"], work))

    artifacts = {**driver.build(models, ctx, work, progress, report), **recovered}
    report["precision"] = driver.precision.record()  # after build: a target may choose it there (cpu)
    for name in models:
        if name != "dense":
            torch.save(models[name], work / f"{name}.pt")
            artifacts[f"{name}.pt"] = work / f"{name}.pt"
    torch.save(dict(zip(inputs.names, inputs.tensors())), work / "example_inputs.pt")
    artifacts["example_inputs.pt"] = work / "example_inputs.pt"

    check_sets = [inputs] + [random_like(inputs, seed=options.seed + 1 + i)
                             for i in range(options.verify_random_inputs)]
    with progress.stage("fidelity", "comparing pruned to dense"):
        extra = [random_like(inputs, seed=options.seed + 100 + i) for i in range(FIDELITY_RANDOM_SETS)]
        fidelity_sets = [inputs] + [b for b, _ in calib_batches] + (extra if not calib_batches else check_sets[1:])
        budget = None if calib_batches else FIDELITY_BUDGET_S  # real data is always compared in full
        report["fidelity"] = fidelity(model, models["pruned"], fidelity_sets, bool(calib_batches), budget)
        if "pruned_2to4" in models:
            report["fidelity_2to4"] = fidelity(model, models["pruned_2to4"], fidelity_sets, bool(calib_batches),
                                               budget)
    references = {name: reference_outputs(m, check_sets) for name, m in models.items()}
    if driver.precision.deployed != "fp32":  # the deployed artifacts are checked on real samples when there are some
        driver.precision_sets = precision_check_sets(data.val or calib_batches, inputs) or None
        driver.precision_references = {name: reference_outputs(m, driver.precision_sets) for name, m in
                                       models.items()} if driver.precision_sets else None
    save_reference(work / REFERENCE, check_sets, references, driver.precision_sets or check_sets,
                   driver.precision_references or references)
    if not driver.runs_torch_models:
        _park(park, progress, model, *models.values())
    report["verification"] = driver.verify(references, artifacts, check_sets, options, progress)
    report["warnings"].extend(getattr(driver, "warnings", []))
    if data.metric and report.get("accuracy") and driver.deployed_runner(artifacts, "pruned", options) is not None:
        _deployed_accuracy(report["accuracy"], data, driver, artifacts, inputs, options, progress)
    if options.test_data and report.get("accuracy"):
        _test_accuracy_deployed(report["accuracy"], data.metric, test_batches, driver, artifacts, inputs, options,
                                progress)
    if options.max_drop is not None:
        try:
            _check_floor(report, options.max_drop)
        except UserError:
            if search != "candidate":  # a --max-drop search's candidate records its drop and goes on
                raise
    report["models"] = {name: {"params": params, "macs": macs, **driver.model_facts(artifacts, name)}
                        for name, (macs, params) in facts.items()}
    dense_macs, dense_params = facts["dense"]
    pruned_macs, pruned_params = facts["pruned"]
    report["mac_reduction"] = dense_macs / pruned_macs if pruned_macs else None
    report["param_reduction"] = dense_params / pruned_params if pruned_params else None
    report["speedup"] = report["efficiency"] = None
    failed = [(n, c) for n, c in report["verification"].get("deployed", {}).items() if not c["passed"]]
    if failed:
        name, c = failed[0]
        raise _with_report(report, VerificationError(
            f"the deployed {c['precision']} {name} model drifts from torch FP32: cosine min {c['cosine_min']:.4f} < "
            f"{c['cosine_floor']}" + ("" if c["finite"] else " (non-finite outputs)"),
            "--precision fp32 (or bf16) keeps it closer; for int8 give more representative --calib-data"))
    if not report["verification"]["passed"]:
        v = report["verification"]
        if v.get("nonfinite"):
            raise VerificationError(f"ONNX output {v['worst_output']} of the {v['worst_model']} model is not finite "
                                    f"({v['nonfinite']})", "check the model and --data for NaN or extreme values")
        raise VerificationError(
            f"ONNX output {v['worst_output']} of the {v['worst_model']} model differs from torch: "
            f"max relative error {v['max_rel_err']:.2e} > tolerance {v['tolerance']:.0e}",
            "raise --tolerance if this is expected, or try --exporter dynamo / another --opset")
    return report, models, artifacts


def _with_report(report: dict, error):
    error.candidate_report = report
    return error


def _check_before_work(model, inputs, out_dir: Path, protected: dict) -> None:
    """What can be the user's fault and is cheap to know: the output place, free space, the model running."""
    check_out_dir(out_dir, protected)
    check_writable(out_dir)
    check_space(3 * sum(p.numel() * p.element_size() for p in model.parameters()), out_dir)  # ONNX x2, pruned.pt
    check_model_runs(model, inputs)


def _prune_pass(options) -> PruneChannels:
    return PruneChannels(options.ratio, options.criterion, options.global_pruning, options.iterative_steps,
                         options.round_to, options.ignore, options.head_ratio, options.pruning_mode,
                         options.graph_budget_s, options.graph_budget_gb)


def _sparsity_pass(options):
    if not options.sparsity:
        return None
    from prune2deploy.config.values import parse_pattern
    from prune2deploy.passes.sparsity import SparsityPass

    n, m = parse_pattern(options.sparsity)
    return SparsityPass(n=n, m=m, permute=options.permute)


def _restore(hit, key: str, work: Path, progress) -> tuple[dict, dict, dict]:
    """A cache hit: the artifacts and the report as stored; the benchmark runs again."""
    with progress.stage("cache", "reusing cached artifacts"):
        reused = cache.restore(hit, work)
        report = json.loads((work / "report.json").read_text())
        artifacts = {name: work / name for name in reused if name not in cache.CACHED}
        report["warnings"] = [w for w in report["warnings"] if "coefficient of variation" not in w]
    report["cache"] = {"hit": True, "key": key, "reused": sorted(artifacts)}
    return report, {name: None for name in report["models"]}, artifacts


def _test_accuracy_torch(accuracy: dict, metric, models: dict, inputs, options, progress) -> list:
    """accuracy.test: --test-data's metric of the torch models given (dense, and pruned unless a cache hit restored
    only its files); the shipped artifact's comes after export (_test_accuracy_deployed). Returns the batches."""
    from prune2deploy.data.load import count_samples, load_data

    with progress.stage("accuracy_test", f"measuring {metric.name} on --test-data (reported, never chosen on)"):
        test = load_data(options.test_data, models["dense"], inputs, options, what="--test-data")
        record = {"source": options.test_data, "samples": count_samples(test),
                  **{name: metric(models[name], test) for name in ("dense", "pruned") if name in models}}
    if "pruned" in record:
        record["drop"] = metric.drop(record["dense"], record["pruned"])
    accuracy["test"] = record
    return test


def _test_accuracy_deployed(accuracy: dict, metric, test: list, driver, artifacts, inputs, options, progress,
                            fp32_too: bool = False) -> None:
    """The shipped artifact on --test-data: the deployed one (`fp32_too`: the FP32 ONNX when FP32 ships)."""
    runner = driver.shipped_runner(artifacts, "pruned", options) if fp32_too else \
        driver.deployed_runner(artifacts, "pruned", options)
    if runner is None:
        return
    with progress.stage("accuracy_test_deployed", f"measuring {metric.name} of the deployed artifact on --test-data"):
        value = metric(RunnerModule(runner, _static_batch(inputs), _shapes(inputs)), test)
    accuracy["test"].update(pruned_deployed=value, drop=metric.drop(accuracy["test"]["dense"], value))


def _shapes(inputs) -> list:
    return [tuple(t.shape) for t in inputs.tensors()]


def _static_batch(inputs) -> int:
    return int(inputs.tensors()[0].shape[0]) if inputs.tensors()[0].dim() else 1


def _check_floor(report: dict, max_drop: float) -> None:
    """--max-drop: the model that ships must stay within it of the dense FP32 model, or the compile fails (exit 2)."""
    acc = report["accuracy"]
    deployed = "drop_deployed" in acc
    drop = acc["drop_deployed"] if deployed else acc["drop"]
    acc["max_drop"], acc["fits_max_drop"] = max_drop, drop <= max_drop + 1e-9
    if acc["fits_max_drop"]:
        return
    unit = " points" if acc["unit"] == "%" else ""
    precision = report["precision"]["deployed"]
    fallback = report.get("lowered", {}).get("pruned", {}).get("fallback")
    tried = (f" with {len(fallback['excluded'])} layer(s) back in FP32" if fallback and fallback.get("excluded")
             else "")
    why = ("pruning alone already costs" if acc["drop"] > max_drop else f"{precision} costs the rest") \
        + f" (FP32 pruned drop {acc['drop']:.3g}{unit})"
    raise user_error(f"the deployed {precision} pruned model drops {drop:.3g}{unit} of {acc['metric']} below the dense "
                     f"FP32 model on the validation data, more than --max-drop {max_drop:g}{tried}: {why}",
                     "raise --max-drop, prune less (--ratio), or deploy a higher --precision")


def _deployed_accuracy(accuracy: dict, data, driver, artifacts, inputs, options, progress) -> None:
    """The metric of the artifacts that ship (INT8, OpenVINO IR) on the same validation batches."""
    batch = _static_batch(inputs)
    precision = driver.precision.deployed
    with progress.stage("accuracy_deployed", f"measuring {data.metric.name} of the {precision} artifacts"):
        for name in ("dense", "pruned"):
            runner = driver.deployed_runner(artifacts, name, options)
            accuracy[f"{name}_deployed"] = data.metric(RunnerModule(runner, batch, _shapes(inputs)), data.val)
            del runner
    accuracy["deployed_precision"] = precision
    accuracy["drop_deployed"] = data.metric.drop(accuracy["dense"], accuracy["pruned_deployed"])


def _prune_and_recover(model, ctx, prune, recover, progress) -> nn.Module:
    """Prune a copy of the dense model; with recovery, BN re-estimation and distillation after every step."""
    pruned = shared_copy(model)  # the dense weights, shared until pruning replaces them

    def recover_between_steps(step_model, step):
        unshare(step_model, model)
        recover.between_steps(step_model, step)

    prune.on_step = recover_between_steps if recover else None
    _run_pass(prune, pruned, ctx, progress)
    unshare(pruned, model)
    if recover:
        _run_pass(recover, pruned, ctx, progress)
        distributed.finish()
    return pruned.eval()


def _park(park, progress, *models) -> None:
    stage = ("park", "parking the torch models on disk while only ONNX files run") if park.keep else \
        ("release", "freeing the torch models: only ONNX files run from here")
    with progress.stage(*stage):
        park.park(*models)


def _run_pass(p, model, ctx, progress) -> None:
    with progress.stage(p.name, f"pass {p.name}"):
        ctx.records[p.name] = p.run(model, ctx)
        p.ensure(model, ctx)


def sensitivity(model, example_inputs, out_dir, options=None, ratios=RATIOS, macs: bool = False, cache_dir=None,
                protected_paths: dict | None = None, progress=None, **option_overrides) -> dict:
    """Python API of `p2d sensitivity`: measure, then publish out_dir/{sensitivity.json,.md,.png, manifest.json}.

    `out_dir` follows compile's rules (new, empty or written by p2d; never an input); nothing is written on error.
    """
    options = dataclasses.replace(options or CompileOptions(), **option_overrides).validate()
    if options.round_to is None:
        options.round_to = TARGETS[options.target].round_to
    inputs = as_example_inputs(example_inputs)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_dir()
    check_out_dir(Path(out_dir), {**(protected_paths or {}), "the cache directory": cache_dir})
    check_writable(Path(out_dir))
    model = model.eval()
    check_model_runs(model, inputs)
    data = prepare_data(options, model, inputs)
    progress = progress or Progress(enabled=False)
    with progress.stage("sensitivity", f"pruning each group at {len(ratios)} ratios"):
        result = measure_sensitivity(model, inputs, options, data, ratios, macs, cache_dir)
    with locked(Path(out_dir)), workspace() as work:
        result["plot"] = plot_sensitivity(result, work / SENSITIVITY_PLOT)
        write_atomic(work / "sensitivity.json", json.dumps(result, indent=2) + "\n")
        write_atomic(work / "sensitivity.md", sensitivity_markdown(result))
        write_manifest(work, {"sensitivity": {"ratios": list(ratios), "macs": macs}, "options": options.resolved()})
        publish_dir(work, Path(out_dir))
    return result


def finish(out_dir: Path, report: dict) -> dict:
    """Run the target's own stages (engines, benchmark) on a compile prepared where the target could not run;
    republish `out_dir` with the completed report. Raises MissingDependency when this machine cannot either."""
    driver = TARGETS[report["target"]].driver()
    ok, reason = driver.availability()
    if not ok:
        raise MissingDependency(reason)
    progress = Progress()
    with locked(out_dir), workspace() as work:
        for path in out_dir.iterdir():
            if path.is_file():
                shutil.copy2(path, work / path.name)
        options = CompileOptions(**{k: v for k, v in report["options"].items() if k in CompileOptions.field_names()})
        add_benchmark(report, driver.finish(work, options, progress))
        report["status"] = "complete"
        report.pop("next_step", None)
        report["stages_s"].update(progress.times)
        write_atomic(work / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        write_atomic(work / "report.md", render_markdown(report))
        manifest = out_dir / "manifest.json"
        write_manifest(work, json.loads(manifest.read_text())["recipe"] if manifest.exists() else {})
        publish_dir(work, out_dir)
    return report
