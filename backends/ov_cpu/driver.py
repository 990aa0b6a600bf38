"""Target ov-cpu: the FP32 ONNX verified in onnxruntime as on every target, then OpenVINO IR at the deployed
precision, checked against torch FP32, and timed interleaved in OpenVINO: the dense model in FP32, the dense and
the pruned models at the deployed precision."""
from __future__ import annotations

from pathlib import Path

from prune2deploy.backends.onnx.driver import ExportingDriver
from prune2deploy.backends.ort_cpu import cpu_flags
from prune2deploy.backends.ort_cpu.runner import default_threads, device_description
from prune2deploy.backends.ov_cpu.lower import write_ir
from prune2deploy.backends.ov_cpu.runner import OvRunner, cpu_precisions, properties
from prune2deploy.runtime.timing import benchmark_runners

BF16_FLAGS = {"amx_bf16", "avx512_bf16"}


class OvCpuDriver(ExportingDriver):
    def device(self) -> str:
        return f"{device_description()}, OpenVINO CPU plugin"

    def precisions(self, options=None) -> tuple[str, ...]:
        try:
            return cpu_precisions()
        except ImportError:  # the compile stops at availability(), after the ONNX files
            return ("fp32",)

    def auto_precision(self, options=None, cpuinfo: str | None = None) -> tuple[str, str]:
        """bf16 where the CPU has AMX or AVX-512 BF16 (its flags in /proc/cpuinfo) and OpenVINO runs it, else fp32."""
        flags = cpu_flags(cpuinfo)
        native = sorted((flags or set()) & BF16_FLAGS)
        if native and "bf16" in self.precisions():
            return "bf16", f"the CPU has {' and '.join(native)} and OpenVINO's CPU plugin runs BF16 on it (its own default)"
        if flags is None and "bf16" in self.precisions():  # no /proc/cpuinfo: OpenVINO's own report decides
            return "bf16", "OpenVINO's CPU plugin reports native BF16 here (its own default)"
        return "fp32", "this CPU has no native BF16 (neither AMX nor AVX-512 BF16)"

    def build(self, models, ctx, work: Path, progress, report) -> dict:
        artifacts = super().build(models, ctx, work, progress, report)
        return self.lower(models, artifacts, ctx, work, progress, report)

    def lower(self, models, artifacts: dict, ctx, work: Path, progress, report) -> dict:
        """OpenVINO IR of `models` at the deployed precision, from their verified FP32 ONNX."""
        precision = self.precision.deployed
        lowered = report.setdefault("lowered", {})
        for name in models:
            xml = work / f"{name}.{precision}.xml"
            label = "quantizing" if precision == "int8" else "converting"
            with progress.stage(f"lower_{name}", f"{label} {name} to OpenVINO IR ({precision})"):
                lowered[name] = write_ir(artifacts[f"{name}.onnx"], xml, precision, self.calib_feeds,
                                         self.floor if precision == "int8" else None, name)
            artifacts[xml.name], artifacts[xml.with_suffix(".bin").name] = xml, xml.with_suffix(".bin")
        return artifacts

    def verify(self, references, artifacts, check_sets, opts, progress) -> dict:
        result = super().verify(references, artifacts, check_sets, opts, progress)
        precision = self.precision.deployed
        return self.check_deployed(result, references, check_sets,
                                   lambda name: OvRunner(artifacts[f"{name}.{precision}.xml"], opts.threads, precision),
                                   f"IR ({precision})", progress)

    def deployed_runner(self, artifacts, name, opts):
        xml = artifacts.get(f"{name}.{self.precision.deployed}.xml")
        return OvRunner(xml, opts.threads, self.precision.deployed) if xml else None

    def model_facts(self, artifacts: dict, name: str) -> dict:
        facts = super().model_facts(artifacts, name)
        xml = artifacts.get(f"{name}.{self.precision.deployed}.xml")
        if xml:
            facts["ir_bytes"] = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
        return facts

    def benchmark(self, artifacts, inputs, opts, progress) -> dict:
        precision = self.precision.deployed
        threads = opts.threads or default_threads()
        runners = {name: OvRunner(artifacts[f"{name}.{precision}.xml"], threads, precision)
                   for name in ("dense", "pruned", "pruned_2to4") if f"{name}.{precision}.xml" in artifacts}
        if precision != "fp32":  # the 2x2: dense and pruned in FP32 too (the dense FP32 is a user's own baseline)
            runners = {f"{name}_fp32": OvRunner(artifacts[f"{name}.onnx"], threads, "fp32")
                       for name in ("dense", "pruned")} | runners
        result = benchmark_runners(runners, inputs.as_feed(), threads, opts, progress, " in OpenVINO")
        result["settings"] = {"backend": "openvino", "precision": precision, "properties": {
            n: {k: str(v) for k, v in properties(threads, "fp32" if n.endswith("_fp32") else precision).items()}
            for n in runners}, **result["settings"]}
        return result
