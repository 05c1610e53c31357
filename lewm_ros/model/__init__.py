"""LeWM world model in plain PyTorch: encoder, predictor, SIGReg, loss, checkpoint I/O.

No ROS imports. The contract other layers code against is in docs/architecture.md (Model).
"""

from .checkpoint import (CheckpointError, FORMAT_VERSION, load_checkpoint,
                         read_checkpoint_config, save_checkpoint)
from .config import ModelConfig, PRESETS
from .lewm import LeWM, recalibrate_batchnorm
from .sigreg import random_directions, SIGReg, sigreg

__all__ = [
    'CheckpointError', 'FORMAT_VERSION', 'LeWM', 'ModelConfig', 'PRESETS', 'SIGReg',
    'load_checkpoint', 'random_directions', 'read_checkpoint_config', 'recalibrate_batchnorm',
    'save_checkpoint', 'sigreg',
]
