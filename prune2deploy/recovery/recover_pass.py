"""Recovery pass: after pruning (and between iterative pruning steps), re-estimate BatchNorm statistics, then
distil from the dense model (or fine-tune on labels), keeping the best weights on the validation metric.

run -> ensure: `run` measures the metric after pruning and after BN re-estimation, recovers, and returns the
report's `recovery` record; `ensure` checks the recovered model still runs with unchanged output shapes and is
no worse on the validation metric than before recovery.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch.nn as nn

from prune2deploy.runtime import distributed
from prune2deploy.errors import P2DError, user_error
from prune2deploy.model.outputs import output_shapes
from prune2deploy.recovery import Checkpoints, RecoveryConfig, recalibrate_bn, recover
from prune2deploy.artifacts.checkpoints import compile_key


def recovery_method(options, data) -> str:
    """--recover, resolved: kd when there is training data, else none; kd/finetune without data is a user error."""
    method = options.recover or ("kd" if data.train else "none")
    if method != "none" and not data.train:
        raise user_error(f"--recover {method} needs training data", "give --data (or --recover none)")
    if method != "none" and not data.val:
        raise user_error(f"--recover {method} needs validation data for early stopping",
                         "give --val-data or a --val-split > 0")
    return method


class Recover:
    """BN re-estimation + distillation/fine-tuning of the pruned model towards `teacher` on real data."""

    name = "recover"

    def __init__(self, teacher: nn.Module, data, options, method: str, checkpoints: Checkpoints | None = None,
                 show_progress: bool = False):
        self.teacher, self.data, self.method = teacher, data, method
        self.checkpoints, self.show_progress = checkpoints, show_progress
        steps = options.iterative_steps
        self.config = RecoveryConfig(
            method=method, lr=options.lr, epochs=options.epochs, max_steps=options.max_steps,
            minutes=options.recover_minutes / steps if options.recover_minutes else None,
            kd_alpha=options.kd_alpha, kd_temperature=options.kd_temperature, features=list(options.kd_features),
            relations=options.kd_relations, augment=options.kd_augment,
            eval_every=options.eval_every, seed=options.seed)
        self.stages: list[dict] = []
        self.started = None
        self.wall_before = 0.0  # --resume: the pass's wall time before the kill, from the checkpoint

    def between_steps(self, model: nn.Module, step: int) -> None:
        """PruneChannels' per-step hook: recover after every pruning step but the last."""
        self.started = self.started or time.perf_counter()
        self.stages.append(self._stage(model, step))

    def run(self, model: nn.Module, ctx) -> dict:
        self.started = self.started or time.perf_counter()
        self._shapes = output_shapes(ctx.example_inputs.call(model.eval()))
        last = self._stage(model, len(self.stages))
        self.stages.append(last)
        curve = [point for s in self.stages for point in s.get("curve", [])]
        resumed = next((s["resumed_from"] for s in self.stages if s.get("resumed_from")), None)
        return {"method": self.method, "epochs": sum(s.get("epochs", 0) for s in self.stages),
                "steps": sum(s.get("steps", 0) for s in self.stages),
                "wall_s": round(self.wall_before + time.perf_counter() - self.started, 3), "world_size": distributed.world_size(),
                "resumed_from": resumed, "curve": curve, "stages": self.stages,
                "after_prune": last["after_prune"], "after_bn_recalibration": last["after_bn_recalibration"],
                "pruned": last["metric_after"], "bn_layers": last["bn_layers"],
                "settings": {k: v for k, v in vars(self.config).items() if k != "seed"}}

    def ensure(self, model: nn.Module, ctx) -> None:
        shapes = output_shapes(ctx.example_inputs.call(model.eval()))
        if shapes != self._shapes:
            raise P2DError(f"recovery changed the output shapes: {self._shapes} -> {shapes}")
        record = ctx.records[self.name]
        if record["pruned"] < record["after_bn_recalibration"]:
            raise P2DError("recovery kept weights worse than before it on the validation metric")

    def _stage(self, model: nn.Module, stage: int) -> dict:
        metric, train, val = self.data.metric, self.data.train, self.data.val
        saved = self.checkpoints.load() if self.checkpoints else None
        if saved and "measured" in saved:  # the pass's time before the kill: earlier steps + this step's training
            trained = saved["record"]["wall_s"] if saved["done"] else saved["wall_s"]
            self.wall_before = saved["pass_wall_s"] + trained
        if saved and saved.get("stage", -1) > stage:  # --resume: this step was recovered before the kill
            return self._restored(saved, stage)
        if saved and saved.get("stage") == stage and "measured" in saved:
            measured = saved["measured"]  # measured before the kill; this process's model is not that one yet
            pass_wall = saved["pass_wall_s"]  # when this step's training began (its own wall_s continues)
        else:
            after_prune = metric(model, val)
            bn_layers = recalibrate_bn(model, train)
            measured = {"after_prune": after_prune, "bn_layers": bn_layers,
                        "after_bn_recalibration": metric(model, val) if bn_layers else after_prune}
            pass_wall = self.wall_before + time.perf_counter() - self.started
        record = {"stage": stage, **measured, "metric_after": measured["after_bn_recalibration"], "epochs": 0,
                  "steps": 0}
        extra = {"measured": measured, "stages": self.stages, "pass_wall_s": pass_wall}
        record.update(recover(model, self.teacher, train, val, metric, self.config,
                              baseline=measured["after_bn_recalibration"], checkpoints=self.checkpoints, stage=stage,
                              show_progress=self.show_progress, extra=extra))
        record.update(measured)
        return record

    @staticmethod
    def _restored(saved: dict, stage: int) -> dict:
        """The record of a step recovered before the kill, as it was measured then (from the checkpoint)."""
        earlier = saved.get("stages") or []
        if stage < len(earlier):
            return {**earlier[stage], "restored": "from the recovery checkpoint (--resume)"}
        return {"stage": stage, "skipped": "resumed past it", "epochs": 0, "steps": 0,  # a checkpoint without history
                "resumed_from": {"stage": saved["stage"], "epoch": saved.get("epoch")},
                "after_prune": None, "after_bn_recalibration": None, "metric_after": None, "bn_layers": 0}


def recovery_pass(model: nn.Module, inputs, options, data, out_dir: Path, show_progress: bool,
                  content_key: str | None, checkpoint_dir: Path | None = None) -> Recover | None:
    """The Recover pass for this compile, or None (--recover none, or no --data). Its checkpoints live in a
    work area named by everything that determines the result: `content_key` (model, data, options, tool
    versions; the compile's cache key) and the output directory; or in `checkpoint_dir`, resumed from whatever
    it holds (a --max-drop search: the recovery of this ratio, done for another runtime or precision)."""
    method = recovery_method(options, data)
    if method == "none":
        return None
    if checkpoint_dir:
        return Recover(model, data, options, method, Checkpoints(Path(checkpoint_dir), resume=True), show_progress)
    key = compile_key(str(Path(out_dir).absolute()), content_key)
    return Recover(model, data, options, method, Checkpoints.for_compile(key, options.resume), show_progress)
