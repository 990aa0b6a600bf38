"""The settings table: every setting of every command, written once.

From these rows come CompileOptions (config/options.py), each command's flags with their help and defaults
(cli/flags.py), the recipe schema of `p2d compile --config` (config/recipe.py) and the table in
docs/reference.md (`python -m prune2deploy.config.settings docs/reference.md` rewrites it; a test keeps the two
equal). Commands that share a setting share its row.

Columns: `name` is the CompileOptions field (or, for settings that are not compile options, the argparse dest);
`key` the recipe key (None: flag only); `flag` the command-line flag ("" for none, "MODEL" for the positional);
`commands` the commands that take the flag.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

COMPILE = ("compile",)
MODEL_COMMANDS = ("compile", "sensitivity", "inspect")
ALL_COMMANDS = ("compile", "sensitivity", "build", "verify", "bench", "cache", "inspect", "targets")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # str | bool | int | float | list (of strings)
    default: Any
    help: str
    key: str | None = None
    flag: str | None = None  # None: --name-with-dashes; "": no flag (API and recipe only)
    option: bool = True  # a field of CompileOptions
    commands: tuple[str, ...] = COMPILE
    metavar: str | None = None
    dest: str | None = None  # the flag's argparse dest, when it is not `name`
    negated: bool = False  # the flag says the opposite: --no-slim sets slim = False
    off_flag: str | None = None  # a second flag that turns a switch off (--local for --global)
    parse: Callable[[str], Any] | None = None  # argparse type; None: from `kind`
    check: Callable[[Any], str | None] | None = None  # range check of a setting CompileOptions does not validate
    reads_path: bool = False  # names a file or directory the command reads: outputs may never touch it
    required_by: tuple[str, ...] = ()  # commands where the flag is required

    @property
    def cli_flag(self) -> str | None:
        if self.flag == "":
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def arg_dest(self) -> str:
        return self.dest or self.name


def at_least(low: float, strict: bool = False) -> Callable[[Any], str | None]:
    def check(value):
        if value < low or (strict and value == low):
            return f"must be {'>' if strict else '>='} {low:g}"
    return check


def steps_or_auto(value: str) -> int | None:
    """--score-steps, --tie-break-steps: a count, or `auto` (None: the default)."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a step count or auto") from None


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # --- the model and its inputs
    S("model", "str", None, "model file, package.module:callable, file.py:callable, torchvision:NAME, timm:NAME or "
      "hf:PATH", key="model", flag="MODEL", option=False, commands=MODEL_COMMANDS, metavar="MODEL", reads_path=True),
    S("weights", "str", None, "state_dict to load into the model (weights-only)", key="weights", option=False,
      commands=MODEL_COMMANDS, reads_path=True),
    S("trust", "list", None, "allow classes from this module in a model pickle (repeatable)", key="trust",
      option=False, commands=MODEL_COMMANDS, metavar="MODULE_PREFIX"),
    S("trust_pickle", "bool", False, "unpickle the model file with full Python (runs any code in it)",
      key="trust_pickle", option=False, commands=MODEL_COMMANDS),
    S("input_shape", "str", None, "one float input, e.g. 1,3,224,224", key="inputs.shape", option=False,
      commands=MODEL_COMMANDS),
    S("input", "list", None, "a named input, e.g. input_ids:1x128:int64 (repeatable)", key="inputs.named",
      option=False, commands=MODEL_COMMANDS, metavar="NAME:SHAPE:DTYPE"),
    S("example_inputs", "str", None, "tensors saved with torch.save", key="inputs.file", option=False,
      commands=MODEL_COMMANDS, metavar="FILE", reads_path=True),
    S("json", "bool", False, "print JSON instead of text", option=False, commands=ALL_COMMANDS),
    S("recipe_path", "str", None, "recipe file with any of these settings; flags override it (docs/ci.md)",
      flag="--config", dest="config", option=False, metavar="TOML", reads_path=True),
    # --- where it goes
    S("targets", "list", None, "deployment target (see p2d targets), repeatable; default cpu", key="targets",
      flag="--target", dest="target", option=False),
    S("target", "str", "cpu", "the deployment target of one compile", flag=""),
    S("out", "str", None, "output directory: new, empty or written by p2d (compile: default p2d-out/<model name>)",
      key="out", option=False, commands=("compile", "sensitivity"), metavar="DIR", required_by=("sensitivity",)),
    S("cache_dir", "str", None, "cache of pruned models, ONNX files and latency tables (default $P2D_CACHE_DIR or "
      "~/.cache/prune2deploy)", key="cache_dir", option=False, commands=("compile", "sensitivity", "cache")),
    S("no_cache", "bool", False, "neither read nor write the cache", key="no_cache", option=False),
    S("cache_max_gb", "float", None, "evict least-recently-used cache entries beyond this size (default 10)",
      key="cache_max_gb", option=False, check=at_least(0, strict=True)),
    S("seed", "int", 0, "seed for inputs, the data split and random choices", key="seed",
      commands=("compile", "sensitivity"), check=at_least(0)),
    # --- [prune]
    S("ratio", "float", 0.5, "channel pruning ratio in [0, 1)", key="prune.ratio"),
    S("head_ratio", "float", None, "attention-head pruning ratio: each block loses ceil(R x heads) heads, keeping "
      "one (default: --ratio)", key="prune.head_ratio"),
    S("criterion", "str", "l1", "which channels go: l1 | l2 | bn-scale | taylor | hessian | random",
      key="prune.criterion", commands=("compile", "sensitivity")),
    S("global_pruning", "bool", False, "rank channels across layers (--local: the same ratio per layer)",
      key="prune.global", flag="--global", off_flag="--local"),
    S("iterative_steps", "int", 1, "prune in N steps", key="prune.iterative_steps"),
    S("round_to", "int", None, "keep channel counts multiples of N (default: the target's, see p2d targets)",
      key="prune.round_to", commands=("compile", "sensitivity")),
    S("ignore", "list", [], "layer to leave unpruned (repeatable)", key="prune.ignore",
      commands=("compile", "sensitivity"), metavar="NAME"),
    S("pruning_mode", "str", "auto", "auto: the whole model's dependency graph, block by block when that is too "
      "costly or cannot be built | global: refuse instead | block-local", key="prune.mode",
      commands=("compile", "inspect"), metavar="MODE"),
    S("graph_budget_s", "float", 30.0, "seconds the whole model's graph may take (each block's: a third)",
      key="prune.graph_budget_s", commands=("compile", "inspect"), metavar="S"),
    S("graph_budget_gb", "float", 4.0, "GB of memory a dependency graph may grow by", key="prune.graph_budget_gb",
      commands=("compile", "inspect"), metavar="GB"),
    # --- [data]
    S("data", "str", None, "real samples: FILE.pt, FILE.npz, module:callable, file.py:callable, text:FILE or "
      "images:DIR; a --val-split of it is held out for the accuracy metric", key="data.train",
      commands=("compile", "sensitivity"), metavar="SPEC", reads_path=True),
    S("val_data", "str", None, "validation samples (same forms); default: held out of --data", key="data.val",
      commands=("compile", "sensitivity"), metavar="SPEC", reads_path=True),
    S("test_data", "str", None, "test samples (same forms): the final artifact's metric is measured on them and "
      "reported apart (accuracy.test); never used to choose anything", key="data.test", metavar="SPEC",
      reads_path=True),
    S("val_split", "float", 0.1, "fraction of --data held out (seeded) when no --val-data", key="data.val_split",
      commands=("compile", "sensitivity")),
    S("calib_data", "str", None, "samples for taylor/hessian and the fidelity check (same forms); default: the "
      "first batches of --data", key="calib_data", commands=("compile", "sensitivity"), metavar="SPEC",
      reads_path=True),
    S("batch_size", "int", 32, "samples per batch of data", key="data.batch_size",
      commands=("compile", "sensitivity")),
    S("max_length", "int", 128, "text: tokens per sentence at most", key="data.max_length",
      commands=("compile", "sensitivity")),
    S("image_size", "str", None, "images: resize to this (default: the input's size)", key="data.image_size",
      commands=("compile", "sensitivity"), metavar="H[,W]"),
    S("image_mean", "str", None, "images: per-channel mean subtracted after scaling to [0, 1]",
      key="data.image_mean", commands=("compile", "sensitivity"), metavar="M[,M,M]"),
    S("image_std", "str", None, "images: per-channel std divided after the mean", key="data.image_std",
      commands=("compile", "sensitivity"), metavar="S[,S,S]"),
    S("metric", "str", None, "top1 | cosine | module:callable(model, batches) -> float; default top1 with labels "
      "and class scores, else cosine to the dense model", key="data.metric", commands=("compile", "sensitivity")),
    # --- [recover]
    S("recover", "str", None, "kd | finetune | none: distil the pruned model from the dense one on --data (after "
      "BatchNorm re-estimation); default kd with --data, else none", key="recover.method"),
    S("lr", "float", 5e-4, "recovery: AdamW peak learning rate (warm-up, cosine decay)", key="recover.lr"),
    S("epochs", "int", 5, "recovery: passes over --data at most (early stop on the validation metric)",
      key="recover.epochs"),
    S("max_steps", "int", None, "recovery: optimiser steps at most", key="recover.max_steps"),
    S("recover_minutes", "float", None, "recovery: wall-clock budget in minutes", key="recover.minutes"),
    S("eval_every", "int", None, "recovery: validate and checkpoint every STEPS steps too (large --data); default "
      "once per epoch", key="recover.eval_every", metavar="STEPS"),
    S("kd_alpha", "float", 0.7, "weight of distillation vs cross-entropy on labels", key="recover.kd_alpha"),
    S("kd_temperature", "float", 2.0, "softmax temperature of distillation", key="recover.kd_temperature"),
    S("kd_features", "list", [], "also match this layer's output to the dense model's (a layer pruning kept at "
      "full width); default: every block of an encoder, none of a classifier; `none`: outputs only",
      key="recover.kd_features", flag="--kd-feature", dest="kd_feature", metavar="LAYER"),
    S("kd_relations", "int", 0, "also distil self-attention relations (MiniLMv2: query, key and value relations "
      "of every BERT-style attention block, split into HEADS relation heads); 0: off", key="recover.kd_relations",
      metavar="HEADS"),
    S("kd_augment", "float", 0.0, "replace a fraction F of each training sentence's tokens by other tokens of the "
      "batch (the teacher labels any input)", key="recover.kd_augment", metavar="F"),
    S("resume", "bool", False, "continue an interrupted recovery from its last checkpoint (same command and --out)",
      key="recover.resume"),
    # --- [budget]
    S("target_speedup", "float", None, "budget instead of --ratio: per-group widths searched until dense p50 / "
      "pruned p50 on the target reaches X (latency measured on ort-cpu)", key="budget.target_speedup",
      metavar="X"),
    S("latency_ms", "float", None, "budget: the pruned model's p50 on the target", key="budget.latency_ms",
      metavar="L"),
    S("macs_fraction", "float", None, "budget: pruned MACs / dense MACs, in (0, 1)", key="budget.macs_fraction",
      metavar="F"),
    S("budget_step", "float", 0.05, "budget search: cost removed per greedy step, as a fraction of the dense cost",
      key="budget.step"),
    S("score_steps", "int", None, "budget search: distillation steps from the dense model per candidate, which is "
      "then scored by minus the validation distillation loss (needs --data; 0: --metric after BN re-estimation "
      "only); default auto: 20, fewer when one candidate's steps would take over 5 s (a step timed on the dense "
      "model), 0 when fewer than 5 fit", key="budget.score_steps", metavar="N|auto", parse=steps_or_auto),
    S("tie_break_steps", "int", None, "budget search: when the searched and uniform widths both meet the budget, "
      "recover each for N steps on the training data and keep the better on validation (0: off); default auto: "
      "the recovery's own settings, at most 1000 steps", key="budget.tie_break_steps", metavar="N|auto",
      parse=steps_or_auto),
    S("workers", "int", 1, "budget search, --max-drop search and sensitivity: processes scoring candidates "
      "(local pool)",
      key="budget.workers", commands=("compile", "sensitivity")),
    S("ray_address", "str", None, "budget search, --max-drop search and sensitivity: score candidates on this Ray "
      "cluster (pip install 'prune2deploy[ray]')", key="budget.ray_address", commands=("compile", "sensitivity"),
      metavar="ADDR"),
    # --- [precision]
    S("precision", "str", "auto", "auto | fp32 | bf16 | fp16 | int8: the precision the target deploys; auto: what its "
      "device runs fastest (cpu: each runtime at its own auto, the fastest deploys; ov-cpu: bf16 where the CPU "
      "has native BF16, else fp32; ort-cpu: fp32; TensorRT: fp16); int8 calibrates on --calib-data or --data", key="precision.mode"),
    S("calib_random", "bool", False, "let --precision int8 calibrate on random inputs when no data is given "
      "(labelled so in the report; accuracy is then unknown)", key="precision.calib_random"),
    S("max_drop", "float", None, "the most the deployed model's validation metric may fall below the dense FP32 "
      "model's (top1: percentage points; cosine: cosine units). Without --ratio or a budget the pruning amount, "
      "runtime and precision are searched for the fastest artifact within it; with them, INT8 puts the most "
      "sensitive layers back in FP32 until it fits. None fits: exit 2. Needs --data or --val-data",
      key="precision.max_drop", metavar="X"),
    S("search_minutes", "float", 30.0, "--max-drop search: wall-clock budget of the whole search (candidates start "
      "in its first 70%%)", key="search.minutes", check=at_least(0, strict=True), metavar="MIN"),
    # --- [sparsity]
    S("sparsity", "str", None, "lay out N:M sparse weights, e.g. 2:4", key="sparsity.pattern", metavar="N:M"),
    S("permute", "bool", False, "search channel permutations before N:M masking", key="sparsity.permute"),
    S("sparsity_margin", "float", 0.05, "torch-cuda 2:4: a Linear goes semi-structured only when its GEMM is at "
      "least this much faster than dense on the GPU", key="sparsity.margin"),
    # --- [torch_cuda]
    S("dtype", "str", "fp16", "torch-cuda compute type: fp16 | bf16", key="torch_cuda.dtype"),
    S("cuda_graphs", "bool", True, "torch-cuda: time without CUDA graphs (torch.compile mode default); kernel "
      "launches then dominate small models", key="torch_cuda.cuda_graphs", flag="--no-cuda-graphs",
      dest="no_cuda_graphs", negated=True),
    S("autotune", "bool", False, "torch-cuda: let Inductor autotune every GEMM/conv (max-autotune); costs minutes "
      "of compile per model (ResNet-50 did not finish in 160 s on an H100)", key="torch_cuda.autotune"),
    # --- [export]
    S("exporter", "str", "auto", "torch.onnx exporter: auto (dynamo with external data from 128 MB of weights, else "
      "torchscript) | torchscript | dynamo", key="export.exporter"),
    S("opset", "int", 18, "ONNX opset", key="export.opset"),
    S("slim", "bool", True, "skip the onnxslim clean-up", key="export.slim", flag="--no-slim", dest="no_slim",
      negated=True),
    S("tolerance", "float", 1e-3, "max relative error ONNX vs torch", key="export.tolerance"),
    S("dynamic_batch", "str", None, "export with a dynamic batch axis; TensorRT engines get this optimisation "
      "profile", key="export.dynamic_batch", metavar="MIN,OPT,MAX"),
    S("verify_random_inputs", "int", 2, "random input sets checked besides the example inputs", flag=""),
    # --- [benchmark]
    S("threads", "int", None, "onnxruntime intra-op threads (default: all cores)", key="benchmark.threads",
      commands=("compile", "sensitivity", "bench")),
    S("bench_seconds", "float", 8.0, "benchmark time budget in seconds", key="benchmark.seconds",
      commands=("compile", "bench")),
    S("warmup", "int", 5, "warm-up rounds before timing", key="benchmark.warmup"),
    S("min_iters", "int", 20, "timed rounds at least", key="benchmark.min_iters"),
    S("skip_benchmark", "bool", False, "skip the latency benchmark", key="benchmark.skip", flag="--no-benchmark",
      dest="no_benchmark"),
    # --- [gates], [ci], [limits]
    S("gate", "list", None, "release gate on any numeric report field, e.g. 'speedup>=2.5' (repeatable; exit 3)",
      key="gates.checks", option=False, metavar="EXPR"),
    S("junit", "str", None, "write JUnit XML: one test per gate and for verification", key="ci.junit",
      option=False, metavar="FILE"),
    S("no_step_summary", "bool", False, "do not append to $GITHUB_STEP_SUMMARY", key="ci.step_summary",
      option=False, negated=True),
    S("stage_timeout_s", "float", None, "seconds any one stage may take (default 1800)",
      key="limits.stage_timeout_s", flag="--stage-timeout", option=False, check=at_least(0, strict=True)),
    S("max_memory_gb", "float", None, "stop when the compile's memory exceeds this (default: 85%% of the machine)",
      key="limits.max_memory_gb", option=False, check=at_least(0, strict=True)),
    # --- p2d sensitivity only
    S("ratios", "str", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "ratios removed from each group, comma-separated",
      option=False, commands=("sensitivity",)),
    S("macs", "bool", False, "MACs saved instead of latency measured on ort-cpu", option=False,
      commands=("sensitivity",)),
)

BY_NAME = {s.name: s for s in SETTINGS}
OPTIONS = tuple(s for s in SETTINGS if s.option)
RECIPE_KEYS = tuple(s for s in SETTINGS if s.key)


def for_command(command: str) -> list[Setting]:
    return [s for s in SETTINGS if s.cli_flag and command in s.commands]


BEGIN, END = "<!-- settings table: generated, do not edit -->", "<!-- end of settings table -->"


def reference_table() -> str:
    """Every setting as a Markdown table: recipe key, flag, option, commands, type, default, help."""
    def default(s: Setting) -> str:
        return "" if s.default in (None, []) else f"`{s.default!r}`"

    lines = [BEGIN, "| recipe key | flag | option | commands | type | default | what it does |",
             "|---|---|---|---|---|---|---|"]
    for s in SETTINGS:
        flag = (s.cli_flag or "") + (f" / {s.off_flag}" if s.off_flag else "")
        cells = [f"`{s.key}`" if s.key else "", f"`{flag}`" if flag else "", f"`{s.name}`" if s.option else "",
                 ", ".join(s.commands) if flag else "", s.kind + (" (the flag negates)" if s.negated else ""),
                 default(s), s.help.replace("|", "\\|").replace("%%", "%")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [END]) + "\n"


def with_table(page: str) -> str:
    """`page` with its generated settings table replaced by the current one."""
    head, rest = page.split(BEGIN, 1)
    return head + reference_table() + rest.split(END, 1)[1].lstrip("\n")


if __name__ == "__main__":  # python -m prune2deploy.config.settings docs/reference.md: regenerate the table
    import sys
    from pathlib import Path

    page = Path(sys.argv[1])
    page.write_text(with_table(page.read_text()))
