"""CompileOptions: every compile setting in one validated dataclass, generated from the settings table
(config/settings.py); the CLI, recipes and the Python API fill it."""
from __future__ import annotations

import copy
from dataclasses import asdict, field, fields, make_dataclass

from prune2deploy.config.settings import OPTIONS
from prune2deploy.config.values import (
    CRITERIA, DTYPES, EXPORTERS, METRICS, PRECISIONS, PRUNING_MODES, RECOVERY_METHODS, parse_channels, parse_pattern, parse_size,
)
from prune2deploy.errors import user_error


class _Checked:
    """What every CompileOptions can do: validate itself (UserError naming the setting), resolve to a dict."""

    def validate(self) -> "CompileOptions":
        from prune2deploy.backends.registry import TARGETS

        if self.target not in TARGETS:
            raise user_error(f"unknown target {self.target!r}", f"use one of {', '.join(TARGETS)} (see p2d targets)")
        if not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio < 1.0:
            raise user_error(f"ratio {self.ratio} is outside [0, 1)", "e.g. --ratio 0.5 removes half the channels")
        if self.head_ratio is not None and not 0.0 <= self.head_ratio < 1.0:
            raise user_error(f"head ratio {self.head_ratio} is outside [0, 1)")
        if self.criterion not in CRITERIA:
            raise user_error(f"unknown criterion {self.criterion!r}", f"use one of {', '.join(CRITERIA)}")
        if self.pruning_mode not in PRUNING_MODES:
            raise user_error(f"unknown pruning mode {self.pruning_mode!r}", f"use one of {', '.join(PRUNING_MODES)}")
        if self.graph_budget_s <= 0 or self.graph_budget_gb <= 0:
            raise user_error("graph-budget-s and graph-budget-gb must be > 0")
        if self.exporter not in EXPORTERS:
            raise user_error(f"unknown exporter {self.exporter!r}", "use auto, torchscript or dynamo")
        for name in ("iterative_steps", "min_iters", "opset"):
            if getattr(self, name) < 1:
                raise user_error(f"{name.replace('_', '-')} must be >= 1")
        if self.round_to is not None and self.round_to < 1:
            raise user_error(f"round-to {self.round_to} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise user_error(f"threads {self.threads} must be >= 1")
        if self.tolerance <= 0:
            raise user_error(f"tolerance {self.tolerance} must be > 0")
        if self.bench_seconds < 0 or self.warmup < 0 or self.verify_random_inputs < 0:
            raise user_error("bench-seconds, warmup and verify-random-inputs must be >= 0")
        if self.dynamic_batch is not None:
            self.batch_profile()
        if self.precision not in PRECISIONS:
            raise user_error(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.dtype not in DTYPES:
            raise user_error(f"unknown dtype {self.dtype!r}", "use fp16 or bf16 (the torch-cuda compute type)")
        if not isinstance(self.sparsity_margin, (int, float)) or not 0.0 <= self.sparsity_margin < 1.0:
            raise user_error(f"sparsity margin {self.sparsity_margin} is outside [0, 1)",
                             "e.g. 0.05: a layer goes 2:4 only when it is at least 5% faster")
        self._validate_data()
        self._validate_precision()
        self._validate_recovery()
        self._validate_budget()
        if self.permute and not self.sparsity:
            raise user_error("--permute needs --sparsity N:M")
        if self.sparsity:
            parse_pattern(self.sparsity)
        return self

    def _validate_precision(self) -> None:
        if self.sparsity and self.precision == "int8" and self.target.startswith("trt"):
            raise user_error("--sparsity with --precision int8 on TensorRT is not built yet (the N:M check reads the "
                             "FP16 ONNX)", "use the default --precision fp16 for 2:4 engines")
        if self.max_drop is None:
            return
        if not isinstance(self.max_drop, (int, float)) or self.max_drop < 0:
            raise user_error(f"max-drop {self.max_drop} must be >= 0",
                             "the metric's units: e.g. --max-drop 0.5 (top-1 points), 0.05 (cosine)")
        if not (self.data or self.val_data):
            raise user_error("--max-drop needs validation data to measure the drop on",
                             "give --val-data (or --data: a --val-split of it is held out)")

    def _validate_data(self) -> None:
        if self.test_data and not (self.data or self.val_data):
            raise user_error("--test-data is measured with the validation metric, which needs validation data",
                             "give --val-data (or --data) too")
        if not isinstance(self.val_split, (int, float)) or not 0.0 <= self.val_split < 1.0:
            raise user_error(f"val-split {self.val_split} is outside [0, 1)", "e.g. --val-split 0.1 holds out 10%")
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise user_error(f"{name.replace('_', '-')} must be >= 1")
        if self.metric is not None and self.metric not in METRICS and ":" not in self.metric:
            raise user_error(f"unknown metric {self.metric!r}", "use top1, cosine or module:callable")
        if self.image_size is not None:
            parse_size(self.image_size)
        if self.image_mean is not None:
            parse_channels(self.image_mean, "image-mean")
        if self.image_std is not None and any(v <= 0 for v in parse_channels(self.image_std, "image-std")):
            raise user_error(f"image-std {self.image_std!r} must be > 0 for every channel")

    def _validate_recovery(self) -> None:
        if self.recover is not None and self.recover not in RECOVERY_METHODS:
            raise user_error(f"unknown recovery method {self.recover!r}", f"use one of {', '.join(RECOVERY_METHODS)}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise user_error(f"lr {self.lr} is outside (0, 1)", "e.g. --lr 5e-4")
        if self.epochs < 1 or any(v is not None and v < 1 for v in (self.max_steps, self.eval_every)):
            raise user_error("epochs, max-steps and eval-every must be >= 1")
        if self.recover_minutes is not None and self.recover_minutes <= 0:
            raise user_error(f"recover-minutes {self.recover_minutes} must be > 0")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise user_error(f"kd-alpha {self.kd_alpha} is outside [0, 1]",
                             "the weight of distillation; 1 - kd-alpha weighs cross-entropy on labels")
        if self.kd_temperature <= 0:
            raise user_error(f"kd-temperature {self.kd_temperature} must be > 0")
        if not isinstance(self.kd_relations, int) or self.kd_relations < 0:
            raise user_error(f"kd-relations {self.kd_relations} must be an integer >= 0",
                             "the number of relation heads, e.g. 4; 0 turns relation distillation off")
        if not 0.0 <= self.kd_augment < 1.0:
            raise user_error(f"kd-augment {self.kd_augment} is outside [0, 1)",
                             "the fraction of training tokens replaced, e.g. 0.15")

    def _validate_budget(self) -> None:
        given = [f"--{n.replace('_', '-')}" for n in ("target_speedup", "latency_ms", "macs_fraction")
                 if getattr(self, n) is not None]
        if len(given) > 1:
            raise user_error(f"two budgets at once ({' and '.join(given)})", "give one of --target-speedup, "
                             "--latency-ms, --macs-fraction")
        if self.target_speedup is not None and not self.target_speedup > 1.0:
            raise user_error(f"target-speedup {self.target_speedup} must be > 1", "e.g. --target-speedup 2.5")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise user_error(f"latency-ms {self.latency_ms} must be > 0", "the pruned model's p50 on the target")
        if self.macs_fraction is not None and not 0.0 < self.macs_fraction < 1.0:
            raise user_error(f"macs-fraction {self.macs_fraction} is outside (0, 1)", "e.g. 0.4 keeps 40% of the MACs")
        if not 0.0 < self.budget_step <= 0.5:
            raise user_error(f"budget-step {self.budget_step} is outside (0, 0.5]", "e.g. 0.05 (5% of dense per step)")
        if self.workers < 1:
            raise user_error(f"workers {self.workers} must be >= 1")
        if self.score_steps is not None and self.score_steps < 0:
            raise user_error(f"score-steps {self.score_steps} must be >= 0", "0 scores after BN re-estimation only")
        if self.tie_break_steps is not None and self.tie_break_steps < 0:
            raise user_error(f"tie-break-steps {self.tie_break_steps} must be >= 0", "0 turns the tie-break off")
        if given and self.target not in ("ort-cpu", "cpu") and self.macs_fraction is None:
            raise user_error(f"{given[0]} is measured on ort-cpu only so far (target {self.target})",
                             "use --macs-fraction on this target, or --target ort-cpu")
        if given and self.iterative_steps > 1:
            raise user_error(f"{given[0]} prunes in one step to the searched widths; --iterative-steps is for --ratio")

    def budget_given(self) -> bool:
        return any(getattr(self, n) is not None for n in ("target_speedup", "latency_ms", "macs_fraction"))

    def batch_profile(self) -> tuple[int, int, int] | None:
        """--dynamic-batch MIN,OPT,MAX as integers (1 <= MIN <= OPT <= MAX)."""
        if self.dynamic_batch is None:
            return None
        try:
            lo, opt, hi = (int(v) for v in str(self.dynamic_batch).split(","))
        except ValueError:
            raise user_error(f"bad dynamic batch {self.dynamic_batch!r}", "write it like 1,8,32 (min,opt,max)") from None
        if not 1 <= lo <= opt <= hi:
            raise user_error(f"bad dynamic batch {self.dynamic_batch!r}: need 1 <= min <= opt <= max")
        return lo, opt, hi

    def resolved(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]



_TYPES = {"str": str, "bool": bool, "int": int, "float": float, "list": list}


def _field(setting):
    if isinstance(setting.default, list):
        return field(default_factory=lambda d=setting.default: copy.copy(d))
    return field(default=setting.default)


CompileOptions = make_dataclass(
    "CompileOptions", [(s.name, _TYPES[s.kind] | None, _field(s)) for s in OPTIONS], bases=(_Checked,),
    namespace={"__doc__": "Every compile setting (config/settings.py: one row each), validated in one place.",
               "__module__": __name__})
