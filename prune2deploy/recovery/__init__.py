"""Recovery after pruning: BatchNorm re-estimation, then distillation from the dense model (or fine-tuning).

recover_pass.py is the pipeline's pass; trainer.py the loop; distill.py and relations.py the losses;
checkpoints.py what a checkpoint holds (where it is kept: artifacts/checkpoints.py)."""
from prune2deploy.recovery.bn_recalibration import recalibrate_bn
from prune2deploy.artifacts.checkpoints import Checkpoints
from prune2deploy.recovery.checkpoints import rebuild, structure
from prune2deploy.recovery.distill import DistillLoss, FeatureMatcher, kd_loss, output_loss
from prune2deploy.config.values import RECOVERY_METHODS as METHODS
from prune2deploy.recovery.trainer import RecoveryConfig, recover, warmup_cosine

__all__ = ["recalibrate_bn", "Checkpoints", "rebuild", "structure", "DistillLoss", "FeatureMatcher", "kd_loss",
           "output_loss", "METHODS", "RecoveryConfig", "recover", "warmup_cosine"]
