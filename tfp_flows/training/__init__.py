"""Training utilities: bits-per-dim metric, callbacks, checkpoints, TensorBoard logs and
probability density distillation."""

from tfp_flows.training.callbacks import NaNGuard
from tfp_flows.training.checkpoints import (
    CHECKPOINT_INDEX,
    EpochCheckpoint,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    resume,
)
from tfp_flows.training.distillation import Distiller
from tfp_flows.training.metrics import DENSITY_SPACES, BitsPerDim, bits_per_dim
from tfp_flows.training.tensorboard import EpochSummaries, tensorboard_callback

__all__ = ["CHECKPOINT_INDEX", "DENSITY_SPACES", "BitsPerDim", "Distiller", "EpochCheckpoint",
           "EpochSummaries", "NaNGuard",
           "bits_per_dim", "checkpoint_path", "latest_checkpoint", "list_checkpoints",
           "resume", "tensorboard_callback"]
