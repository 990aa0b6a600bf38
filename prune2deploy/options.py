"""Every compile setting in one validated dataclass; the CLI and (later) recipe files fill it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .errors import user_error
from .passes.prune_channels import CRITERIA, MODES as PRUNING_MODES


@dataclass
class CompileOptions:
    target: str = "ort-cpu"
    ratio: float = 0.5
    criterion: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int | None = None  # None: the target's alignment
    ignore: list[str] = field(default_factory=list)
    head_ratio: float | None = None  # None: same as ratio
    pruning_mode: str = "auto"  # auto | global | block-local (passes/prune_channels.py)
    graph_budget_s: float = 30.0  # the whole-model graph's time budget (auto: then block-local; a block: 1/3)
    graph_budget_gb: float = 4.0  # ... and its memory budget (GB above the start)
    sparsity: str | None = None  # "2:4" (N:M) or None
    permute: bool = False
    dynamic_batch: str | None = None  # "MIN,OPT,MAX": batch axis dynamic in ONNX, a TensorRT profile
    exporter: str = "torchscript"
    opset: int = 18
    slim: bool = True
    tolerance: float = 1e-3  # max relative error ONNX vs torch
    verify_random_inputs: int = 2
    threads: int | None = None
    warmup: int = 5
    min_iters: int = 20
    bench_seconds: float = 8.0
    seed: int = 0
    skip_benchmark: bool = False
    # torch-cuda only
    dtype: str = "fp16"  # fp16 | bf16
    cuda_graphs: bool = True  # torch.compile mode reduce-overhead
    autotune: bool = False  # Inductor autotunes every GEMM/conv (max-autotune): minutes of compile
    sparsity_margin: float = 0.05  # a Linear goes 2:4 only when its GEMM is >= this much faster

    def validate(self) -> "CompileOptions":
        from .targets import TARGETS

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
        if self.exporter not in ("torchscript", "dynamo"):
            raise user_error(f"unknown exporter {self.exporter!r}", "use torchscript or dynamo")
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
        if self.dtype not in ("fp16", "bf16"):
            raise user_error(f"unknown dtype {self.dtype!r}", "use fp16 or bf16 (the torch-cuda compute type)")
        if not isinstance(self.sparsity_margin, (int, float)) or not 0.0 <= self.sparsity_margin < 1.0:
            raise user_error(f"sparsity margin {self.sparsity_margin} is outside [0, 1)",
                             "e.g. 0.05: a layer goes 2:4 only when it is at least 5% faster")
        if self.permute and not self.sparsity:
            raise user_error("--permute needs --sparsity N:M")
        if self.sparsity:
            from .passes.sparsity import parse_pattern

            parse_pattern(self.sparsity)
        return self

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
