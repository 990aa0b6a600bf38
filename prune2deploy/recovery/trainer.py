"""The recovery loop: AdamW, linear warm-up then cosine decay, early stop on the validation metric, best
checkpoint kept, a checkpoint per validation (each epoch, or every --eval-every steps), seeded and
deterministic on CPU, DDP under torchrun."""
from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from prune2deploy.errors import user_error
from prune2deploy.runtime import distributed
from prune2deploy.recovery.augment import check_augmentable, replace_tokens
from prune2deploy.artifacts.checkpoints import Checkpoints
from prune2deploy.recovery.checkpoints import rebuild, structure
from prune2deploy.recovery.distill import NO_FEATURES, DistillLoss, FeatureMatcher, matched_blocks
from prune2deploy.recovery.relations import RelationMatcher



@dataclass
class RecoveryConfig:
    method: str = "kd"
    lr: float = 5e-4  # AdamW; a tenth to a sixth of a typical Adam training LR (3e-3 .. 5e-3)
    epochs: int = 5
    max_steps: int | None = None
    minutes: float | None = None  # wall-clock budget of this call
    kd_alpha: float = 0.7
    kd_temperature: float = 2.0
    output_loss: str = "cosine"
    features: list[str] = field(default_factory=list)
    relations: int = 0  # relation heads of self-attention relation distillation (relations.py); 0: off
    augment: float = 0.0  # fraction of training tokens replaced (augment.py); 0: clean inputs
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    patience: int = 2  # validations without a better metric before stopping
    eval_every: int | None = None  # validate (and checkpoint) every this many steps too, not only per epoch
    seed: int = 0


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    return factor


class Schedule:
    """warmup_cosine over `total` steps, re-planned when a wall-clock budget will stop training sooner: the warm-up
    and the decay to 0 then span the steps the budget allows, not epochs that will never run. A callable object,
    so LambdaLR's state_dict (the checkpoint) keeps `total`."""

    PROBE_STEPS = 5  # steps timed before the first plan

    def __init__(self, total: int, warmup_fraction: float):
        self.total, self.warmup_fraction = total, warmup_fraction

    def __call__(self, step: int) -> float:
        return warmup_cosine(self.total, max(1, round(self.warmup_fraction * self.total)))(step)

    def replan(self, step: int, planned: int, seconds_per_step: float, seconds_left: float) -> None:
        """Fit the schedule into the budget from the time a step (with its share of validation) has taken."""
        reachable = step + max(1, int(seconds_left / max(seconds_per_step, 1e-9)))
        self.total = distributed.min_over_ranks(min(planned, reachable))


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled or not distributed.is_main(), file=sys.stderr, leave=False,
                desc="  recovery", unit="step", dynamic_ncols=True)


def recover(student: nn.Module, teacher: nn.Module, train: list, val: list, metric: Callable,
            config: RecoveryConfig, baseline: float, checkpoints: Checkpoints | None = None, stage: int = 0,
            show_progress: bool = False, extra: dict | None = None) -> dict:
    """Train `student` towards `teacher` on `train` [(ExampleInputs, labels)]; keep the best weights on `val`.

    `metric(model, batches) -> float` is higher-is-better; `baseline` is its value before recovery (after BN
    re-estimation); weights that never beat it are not kept. `extra` (plain values) is saved with every
    checkpoint, for the caller to read back on --resume. Returns the stage's record (curve, steps, ...).
    """
    extra = extra or {}
    started = time.perf_counter()
    saved = checkpoints.load() if checkpoints else None
    saved = saved if saved and saved.get("stage") == stage else None
    if saved and saved["done"]:
        rebuild(student, saved["structure"])
        student.load_state_dict(saved["state_dict"])
        return {**saved["record"], "resumed_from": {"stage": stage, "epoch": saved["epoch"], "done": True}}

    shard = distributed.shard(train)
    per_epoch = len(shard)
    total = config.epochs * per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    objective = DistillLoss(config.method, config.kd_alpha, config.kd_temperature, config.output_loss)
    torch.manual_seed(config.seed + 7919 * stage)
    if saved:
        rebuild(student, saved["structure"])
        student.load_state_dict(saved["state_dict"])
    feature_names = matched_blocks(student, teacher, shard[0][0], config.features) if config.method == "kd" \
        else [n for n in config.features if n != NO_FEATURES]
    matchers = [FeatureMatcher(student, teacher, feature_names)] if feature_names else []
    if config.relations and config.method == "kd":
        matchers.append(RelationMatcher(student, teacher, config.relations))
    if config.augment:
        check_augmentable(shard[0][0])
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    plan = Schedule(total, config.warmup_fraction)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, plan)
    best_metric, best_state, best_epoch = baseline, copy.deepcopy(student.state_dict()), 0
    curve, step, epoch, offset, waited, elapsed_before = [], 0, 0, 0, 0, 0.0
    resumed_from = None
    if saved:  # the optimiser's state (with its current LR) first, then the schedule's position
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        best_metric, best_state, best_epoch = saved["best_metric"], saved["best_state"], saved["best_epoch"]
        curve, step, epoch, waited = saved["curve"], saved["step"], saved["epoch"], saved["waited"]
        offset = saved.get("offset", 0)
        elapsed_before = saved["wall_s"]
        resumed_from = {"stage": stage, "epoch": epoch, "step": step}

    model = distributed.wrap(student)
    teacher.eval()
    deadline = started + config.minutes * 60 - elapsed_before if config.minutes else None
    stop = step >= plan.total or waited >= config.patience
    first_step = step

    def fit_to_budget(bar):
        if deadline is not None and step > first_step:
            now = time.perf_counter()
            plan.replan(step, total, (now - started) / (step - first_step), deadline - now)
            bar.total = plan.total
    with _bar(total, show_progress) as bar:
        bar.update(step)
        while not stop and epoch < config.epochs:
            order = torch.randperm(per_epoch, generator=torch.Generator().manual_seed(
                config.seed * 100003 + stage * 1009 + epoch)).tolist()
            model.train()
            losses = []
            for i in order[offset:]:
                inputs, labels = shard[i]
                if config.augment:  # seeded by position, so --resume replays the same inputs
                    inputs = replace_tokens(inputs, config.augment, torch.Generator().manual_seed(
                        config.seed * 100003 + stage * 1009 + step))
                loss = _step(model, teacher, inputs, labels, objective, matchers, config.method)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step, offset = step + 1, offset + 1
                value = float(loss.detach())
                if distributed.any_rank(not math.isfinite(value)):  # every rank stops together
                    raise _nonfinite_loss(value, step, epoch + 1, config)
                losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", val=f"{best_metric:.4g}")
                if step - first_step == Schedule.PROBE_STEPS:
                    fit_to_budget(bar)
                out_of_time = deadline is not None and time.perf_counter() > deadline
                if step >= plan.total or distributed.any_rank(out_of_time):  # plan.total <= total
                    stop = True
                    break
                if config.eval_every and step % config.eval_every == 0 and offset < per_epoch:
                    break  # validate within the epoch; the next round continues at `offset`
            done_epochs = epoch + 1 if offset >= per_epoch else round(epoch + offset / per_epoch, 3)
            if offset >= per_epoch or stop:  # a stopped epoch counts as one in `epochs`; the curve says how much ran
                epoch, offset = epoch + 1, 0
            student.eval()
            value = float(metric(student, val))
            curve.append({"stage": stage, "epoch": done_epochs, "step": step,
                          "loss": sum(losses) / max(1, len(losses)), "metric": value,
                          "lr": optimizer.param_groups[0]["lr"]})
            if value > best_metric:
                best_metric, best_state, best_epoch, waited = value, copy.deepcopy(student.state_dict()), \
                    curve[-1]["epoch"], 0
            else:
                waited += 1
            stop = stop or waited >= config.patience
            fit_to_budget(bar)  # validation takes time too: plan again with it
            if checkpoints:
                checkpoints.save({**extra, "stage": stage, "done": False, "epoch": epoch, "offset": offset,
                                  "step": step, "waited": waited,
                                  "structure": structure(student), "state_dict": student.state_dict(),
                                  "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                  "rng": torch.get_rng_state(), "best_metric": best_metric,
                                  "best_state": best_state, "best_epoch": best_epoch, "curve": curve,
                                  "wall_s": elapsed_before + time.perf_counter() - started})
    del model
    student.load_state_dict(best_state)
    student.eval()
    record = {"stage": stage, "epochs": epoch + (1 if offset else 0), "steps": step, "best_epoch": best_epoch,
              "metric_before": baseline, "metric_after": best_metric, "kd_features": feature_names,
              "wall_s": round(elapsed_before + time.perf_counter() - started, 3), "curve": curve,
              "world_size": distributed.world_size(), "resumed_from": resumed_from}
    if checkpoints:
        checkpoints.save({**extra, "stage": stage, "done": True, "epoch": epoch, "structure": structure(student),
                          "state_dict": student.state_dict(), "record": record})
    return record


def _nonfinite_loss(value: float, step: int, epoch: int, config: RecoveryConfig):
    what = "NaN" if math.isnan(value) else "Inf" if math.isinf(value) else "not finite on another rank"
    return user_error(f"recovery: the training loss became {what} at step {step} (epoch {epoch}); recovery "
                      f"stopped",
                      f"check --data for NaN or extreme values, or lower --lr (now {config.lr:g})")


def validation_loss(student: nn.Module, teacher: nn.Module, batches: list, objective: DistillLoss) -> float:
    """The recovery objective (distillation from `teacher`) averaged over `batches`, without gradients."""
    student.eval()
    with torch.no_grad():
        return sum(float(_step(student, teacher, inputs, labels, objective, [], "kd")) for inputs, labels in batches) \
            / max(1, len(batches))


def _step(model, teacher, inputs, labels, objective, matchers, method):
    """The batch's loss: the objective on the outputs plus each matcher's (features, relations) loss."""
    teacher_out, mask = None, inputs.kwargs.get("attention_mask")
    with ExitStack() as captures:
        for matcher in matchers:
            captures.enter_context(matcher.capture())
        if method == "kd":
            with torch.no_grad():
                teacher_out = inputs.call(teacher)
        student_out = inputs.call(model)
    loss = objective(student_out, teacher_out, labels, mask)
    for matcher in matchers:
        loss = loss + matcher.loss(mask)
    return loss
