"""What every target shares: FP32 ONNX of each model variant, verified against torch in onnxruntime,
and the N:M layout re-checked in the exported files."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.errors import MissingDependency
from prune2deploy.backends.onnx.export import export_onnx, onnx_bytes, takes_large_model_path
from prune2deploy.backends.ort_cpu.runner import OrtRunner

from prune2deploy.backends.onnx.sparsity import assert_onnx_nm
from prune2deploy.backends.onnx.verify import verify_onnx
from prune2deploy.precision.compare import compare


class ExportingDriver:
    """Exports `models` (name -> nn.Module) to `<name>.onnx` and verifies them; subclasses benchmark."""

    runs_torch_models = False  # the benchmark runs exported files only: the torch models can wait on disk
    # Set by the pipeline's precision stage before build(): the resolved precision.Precision, INT8's calibration
    # feeds, and real input sets (with the torch FP32 outputs on them) to check the deployed artifacts on.
    precision = None
    calib_feeds: list = []
    precision_sets: list | None = None
    precision_references: dict | None = None
    floor = None  # precision.floor.AccuracyFloor with --max-drop (set after the validation metric is known)

    def deployed_runner(self, artifacts: dict, name: str, opts):
        """A runner of `name` at the deployed precision (None when the target deploys the FP32 ONNX)."""
        return None

    def runtimes(self, name: str) -> dict:
        """The runtimes this target deploys on (name -> driver): itself; `cpu` chooses among several."""
        return {name: self}

    def shipped_runner(self, artifacts: dict, name: str, opts):
        """A runner of what ships for `name`: the deployed artifact, else the verified FP32 ONNX (onnxruntime)."""
        return self.deployed_runner(artifacts, name, opts) or OrtRunner(artifacts[f"{name}.onnx"], opts.threads)

    def precisions(self, options=None) -> tuple[str, ...]:
        """The precisions this target deploys on this machine."""
        return ("fp32",)

    def auto_precision(self, options=None) -> tuple[str, str]:
        """(precision, why) for --precision auto."""
        return "fp32", "the target runs the FP32 ONNX"

    def restored(self, report: dict) -> None:
        """A cache hit restored `report` and its artifacts: pick up any choice the cached compile made."""

    @property
    def cacheable(self) -> bool:
        """Whether the compile cache may stand in for export and verification (not when the benchmark needs
        the torch models themselves)."""
        return not self.runs_torch_models

    def device(self) -> str:
        raise NotImplementedError

    def made_by_benchmark(self, work: Path) -> list[str]:
        """Files the benchmark wrote into `work` that a cache hit can reuse."""
        return []

    def unavailable(self, reason: str, out_dir: Path) -> MissingDependency:
        """The error a compile ends with when this machine cannot run the target's own stages."""
        return MissingDependency(f"{reason.rstrip()} (the prepared artifacts are in {out_dir})")

    def availability(self) -> tuple[bool, str]:
        """Whether this machine can run the target-specific stages (engines, benchmark)."""
        return True, ""

    def build(self, models: dict, ctx, work: Path, progress, report) -> dict:
        opts, artifacts, exports = ctx.options, {}, {}
        # One export path per compile, chosen by the dense model's size: a 480 MB CNN pruned to 120 MB would
        # otherwise export its pruned model through TorchScript + onnxslim (~10x those weights, the peak).
        large = takes_large_model_path(models["dense"]) if "dense" in models else None
        for name, model in models.items():
            path = work / f"{name}.onnx"
            with progress.stage(f"export_{name}", f"exporting {name} ONNX"):
                exports[name] = export_onnx(model, ctx.example_inputs, path, opset=opts.opset,
                                            exporter=opts.exporter, slim=opts.slim,
                                            dynamic_batch=opts.dynamic_batch is not None, large=large)
            artifacts[f"{name}.onnx"] = path
            if exports[name]["external_data"]:
                artifacts[f"{name}.onnx.data"] = path.parent / f"{path.name}.data"
        report["export"] = exports
        sparsity = ctx.records.get("sparsity")
        if sparsity:
            report["sparsity_check"] = self.check_sparsity(artifacts, models, sparsity, progress)
        return artifacts

    def check_sparsity(self, artifacts: dict, models: dict, record: dict, progress, suffix: str = "") -> dict:
        """Every layer the sparsity pass claims must still hold N:M in the ONNX file, on the axis TensorRT reads."""
        n, m = (int(v) for v in record["pattern"].split(":"))
        results = {}
        for name in [k for k in models if k.endswith("_2to4") or k.endswith("_sparse")]:
            path = artifacts[f"{name}{suffix}.onnx"]
            with progress.stage(f"sparsity_check_{name}{suffix}", f"checking {record['pattern']} in {path.name}"):
                checked = assert_onnx_nm(path, record["layers"], n, m, model=models[name])
            results[path.name] = {"layers": len(checked), "held": sum(r["holds"] for r in checked),
                                  "matched_by": sorted({r["match"] for r in checked})}
        return results

    def verify(self, references: dict, artifacts: dict, check_sets: list, opts, progress) -> dict:
        """Each `<name>.onnx` in onnxruntime against `references` (name -> the torch model or its
        verify.reference_outputs on `check_sets`)."""
        per_model = {}
        for name, reference in references.items():
            with progress.stage(f"verify_{name}", f"verifying {name} ONNX against torch"):
                runner = OrtRunner(artifacts[f"{name}.onnx"], opts.threads)
                per_model[name] = verify_onnx(reference, runner, check_sets, opts.tolerance)
                del runner  # one session at a time: the next model's must not meet this one in memory
        worst = max(per_model, key=lambda n: per_model[n]["max_rel_err"])
        self.warnings = [f"{name}.onnx {o['output']}: {o['warning']}" for name, v in per_model.items()
                         for o in v["outputs"] if "warning" in o]
        return {"max_abs_err": max(v["max_abs_err"] for v in per_model.values()),
                "max_rel_err": per_model[worst]["max_rel_err"], "worst_model": worst,
                "worst_output": per_model[worst]["worst_output"], "tolerance": opts.tolerance,
                "nonfinite": per_model[worst].get("nonfinite"),
                "passed": all(v["passed"] for v in per_model.values()), "models": per_model}

    def check_deployed(self, result: dict, references: dict, check_sets: list, runner_for, what: str,
                       progress) -> dict:
        """Each model's deployed artifact (`runner_for(name)`) against torch FP32 on the precision check sets (real
        samples where there are some), with the deployed precision's floor; folded into `result`."""
        precision, sets, deployed = self.precision.deployed, self.precision_sets or check_sets, {}
        for name, reference in (self.precision_references or references).items():
            with progress.stage(f"verify_{name}_{precision}", f"checking {name} {what} against torch FP32"):
                runner = runner_for(name)
                deployed[name] = compare(reference, runner, sets, precision)
                del runner  # one session at a time
        result["deployed"] = deployed
        result["passed"] = result["passed"] and all(v["passed"] for v in deployed.values())
        return result

    def model_facts(self, artifacts: dict, name: str) -> dict:
        return {"onnx_bytes": onnx_bytes(artifacts[f"{name}.onnx"])}

    def benchmark(self, artifacts: dict, inputs, opts, progress) -> dict:
        raise NotImplementedError

    def finish(self, work: Path, opts, progress) -> dict:
        """The target's own stages on a prepared compile copied into `work` (`p2d build`); the benchmark result."""
        raise NotImplementedError(f"{type(self).__name__} prepares nothing to finish elsewhere")
