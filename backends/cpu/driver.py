"""Target cpu: export and verify once, time the dense model on each installed CPU runtime at the precision it
would deploy, choose, then let the chosen runtime's driver lower, verify, measure and benchmark as if it had
been named with --target."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from prune2deploy.backends.onnx.driver import ExportingDriver
from prune2deploy.backends.ort_cpu.runner import default_threads, device_description
from prune2deploy.errors import user_error
from prune2deploy.precision.choose import Precision
from prune2deploy.runtime.timing import benchmark_runners

BASELINE = "ort-cpu"  # where a compile stays unless another runtime is clearly faster
MARGIN = 1.15  # ... by this factor on the dense model (interleaved p50s): close calls stay stable
CHOICE_SECONDS = 2.0  # timing budget of the choice (both runtimes together)


def runtimes() -> dict:
    """name -> (driver factory, version line) of the CPU runtimes that import here, ort-cpu first."""
    from prune2deploy.backends.registry import TARGETS, availability

    found = {}
    for name in (BASELINE, "ov-cpu"):
        ok, why = availability(name)
        if ok:
            found[name] = (TARGETS[name].driver, why)
    return found


class CpuDriver(ExportingDriver):
    def __init__(self):
        self.drivers = {name: factory() for name, (factory, _) in runtimes().items()}
        self.chosen = None  # the driver every stage after the choice goes to
        self.choice: dict | None = None

    def device(self) -> str:
        return device_description()

    def runtimes(self, name: str) -> dict:
        return dict(self.drivers)

    def precisions(self, options=None) -> tuple[str, ...]:
        offered = {p for d in self.drivers.values() for p in d.precisions(options)}
        return tuple(p for p in ("fp32", "bf16", "fp16", "int8") if p in offered)

    def auto_precision(self, options=None) -> tuple[str, str]:
        return "auto", "each CPU runtime at its own auto precision; the fastest on the dense model deploys"

    def build(self, models, ctx, work: Path, progress, report) -> dict:
        artifacts = super().build(models, ctx, work, progress, report)
        self._choose(models, artifacts, ctx, work, progress, report)
        rest = {name: m for name, m in models.items() if name != "dense"}
        return self.chosen.lower(rest, artifacts, ctx, work, progress, report)

    def _choose(self, models, artifacts: dict, ctx, work: Path, progress, report) -> None:
        opts, inputs = ctx.options, ctx.example_inputs
        requested = self.precision.requested
        candidates = {}
        for name, driver in self.drivers.items():
            if requested == "auto":
                precision, why = driver.auto_precision(opts)
            elif requested in driver.precisions(opts):
                precision, why = requested, "as requested"
            else:
                continue
            driver.precision = Precision(requested, precision, why, self.precision.calibration)
            driver.calib_feeds, driver.floor = self.calib_feeds, self.floor
            candidates[name] = driver
        if not candidates:  # resolve() checked the union: unreachable unless a runtime changed its mind
            raise user_error(f"no CPU runtime here runs --precision {requested}", "use --precision auto")
        lowered, runners = {}, {}
        for name, driver in candidates.items():
            made = driver.lower({"dense": models["dense"]}, dict(artifacts), ctx, work, progress,
                                lowered.setdefault(name, {}))
            lowered[name]["artifacts"] = made
            runners[name] = driver.shipped_runner(made, "dense", opts)
        timings = {}
        if len(runners) > 1:
            threads = opts.threads or default_threads()
            short = dataclasses.replace(opts, bench_seconds=CHOICE_SECONDS, min_iters=min(opts.min_iters, 20))
            result = benchmark_runners(runners, inputs.as_feed(), threads, short, progress,
                                       " to choose the CPU runtime (dense model)")
            timings = {name: result["stats"][name]["p50"] for name in runners}
        del runners
        chosen = _pick(timings, list(candidates))
        self.chosen = candidates[chosen]
        for name in candidates:  # the other runtime's dense files go; the chosen one's stay as its artifacts
            for key, path in lowered[name]["artifacts"].items():
                if key in artifacts:
                    continue
                if name == chosen:
                    artifacts[key] = path
                else:
                    Path(path).unlink(missing_ok=True)
        report.setdefault("lowered", {}).update(lowered[chosen].get("lowered", {}))
        deployed = candidates[chosen].precision
        why = _why(chosen, timings, candidates)
        deployed.why = f"{deployed.why}; {why}"
        self.precision = deployed  # one object from here: the chosen driver may still revise it (ort-cpu INT8)
        self.choice = {"chosen": chosen, "margin": MARGIN, "why": why, "runtimes": {
            name: {"precision": d.precision.deployed, "dense_p50_ms": timings.get(name)} for name, d in
            candidates.items()}}
        report["runtime_choice"] = self.choice

    def restored(self, report: dict) -> None:
        """A cache hit: the choice the cached compile made (its artifacts are that runtime's)."""
        self.choice = report["runtime_choice"]
        self.chosen = self.drivers[self.choice["chosen"]]
        self.chosen.precision = Precision(self.precision.requested, report["precision"]["deployed"],
                                          report["precision"]["why"], report["precision"].get("calibration"))
        self.precision = self.chosen.precision

    def lower(self, models, artifacts, ctx, work, progress, report) -> dict:
        return self.chosen.lower(models, artifacts, ctx, work, progress, report)

    def verify(self, references, artifacts, check_sets, opts, progress) -> dict:
        self.chosen.precision_sets, self.chosen.precision_references = self.precision_sets, self.precision_references
        result = self.chosen.verify(references, artifacts, check_sets, opts, progress)
        self.warnings = getattr(self.chosen, "warnings", [])
        return result

    def deployed_runner(self, artifacts, name, opts):
        return self.chosen.deployed_runner(artifacts, name, opts)

    def model_facts(self, artifacts, name) -> dict:
        return self.chosen.model_facts(artifacts, name)

    def made_by_benchmark(self, work: Path) -> list[str]:
        return self.chosen.made_by_benchmark(work)

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        result = self.chosen.benchmark(artifacts, inputs, opts, progress)
        result["settings"]["runtime_choice"] = self.choice["chosen"]
        return result


def _pick(timings: dict, names: list[str]) -> str:
    """The baseline unless another runtime ran the dense model at least MARGIN times faster."""
    if not timings:
        return names[0]
    base = BASELINE if BASELINE in timings else min(timings, key=timings.get)
    best = min(timings, key=timings.get)
    return best if timings[base] >= MARGIN * timings[best] else base


def _why(chosen: str, timings: dict, candidates: dict) -> str:
    label = {n: f"{n} {d.precision.deployed}" for n, d in candidates.items()}
    if not timings:
        return f"{label[chosen]}: the only CPU runtime here that runs it"
    others = ", ".join(f"{label[o]} {timings[o]:.3g} ms" for o in timings if o != chosen)
    fastest = min(timings, key=timings.get)
    if chosen != fastest:
        return (f"{label[chosen]} ran the dense model in {timings[chosen]:.3g} ms, {others}: not the {MARGIN}x "
                f"it takes to leave ONNX Runtime")
    return f"{label[chosen]} ran the dense model fastest: {timings[chosen]:.3g} ms vs {others} (margin {MARGIN}x)"
