"""Recovery after pruning: BatchNorm re-estimation, then distillation from the dense model (or fine-tuning)."""
from .bn_recalibration import recalibrate_bn
from .checkpoints import Checkpoints, rebuild, structure
from .distill import DistillLoss, FeatureMatcher, kd_loss, output_loss
from .trainer import METHODS, RecoveryConfig, recover, warmup_cosine

__all__ = ["recalibrate_bn", "Checkpoints", "rebuild", "structure", "DistillLoss", "FeatureMatcher", "kd_loss",
           "output_loss", "METHODS", "RecoveryConfig", "recover", "warmup_cosine"]
