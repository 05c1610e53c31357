"""``ModelConfig``: every hyperparameter of LeWM plus the data metadata a consumer needs.

The config travels with every checkpoint (``config.json``), so a node that loads a model also
learns how to preprocess images, how to normalise actions and how many latents of history the
predictor takes. Nothing in the model reads a size from anywhere else.
"""

from dataclasses import asdict, dataclass, field, fields, replace
import math

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _PresetAccessor:
    """``ModelConfig.preset(name, **overrides)`` on the class, the preset name on an instance."""

    def __get__(self, instance, owner):
        if instance is None:
            return owner.build_preset
        return instance.preset_name


@dataclass
class ModelConfig:
    """Hyperparameters and data metadata of a LeWM model.

    Sizes follow ``docs/model.md``; the ``paper`` preset is the released LeWM configuration
    (ViT-tiny/14 at 224 px, 6-block AdaLN-zero predictor, about 18.03 M parameters for A=2).
    """

    # Name of the preset this config was built from ('paper', 'small' or 'custom'). Read it
    # as ``config.preset`` too; on the class, ``ModelConfig.preset(name)`` builds a preset.
    preset_name: str = 'custom'
    # Image preprocessing: frames are resized to image_size x image_size, scaled to [0, 1]
    # and normalised per channel with image_mean / image_std.
    image_size: int = 224
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    # Encoder (ViT written from scratch, CLS token of the final LayerNorm'd hidden state).
    patch_size: int = 14
    encoder_width: int = 192
    encoder_depth: int = 12
    encoder_heads: int = 3
    encoder_mlp: int = 768
    encoder_ln_eps: float = 1e-12
    # Projectors (encoder output and predictor output): Linear -> BatchNorm1d -> GELU -> Linear.
    projector_hidden: int = 2048
    # Latent dimension: output of the encoder projector and width of the predictor.
    latent_dim: int = 192
    # Predictor (causal transformer, AdaLN-zero action conditioning in every block).
    predictor_depth: int = 6
    predictor_heads: int = 16
    predictor_head_dim: int = 64
    predictor_mlp: int = 2048
    predictor_dropout: float = 0.1
    predictor_emb_dropout: float = 0.0
    # Action encoder: per-timestep Linear(frameskip*A -> action_smoothed_dim), then
    # Linear(-> action_hidden), SiLU, Linear(-> latent_dim).
    action_smoothed_dim: int = 10
    action_hidden: int = 768
    # Data and timing.
    action_dim: int = 2
    frameskip: int = 5
    history: int = 3
    # Loss.
    sigreg_weight: float = 0.09
    sigreg_directions: int = 1024
    sigreg_knots: int = 17
    sigreg_t_max: float = 3.0
    # Data metadata, filled in by the trainer from the dataset.
    action_mean: list = field(default_factory=list)
    action_std: list = field(default_factory=list)
    joint_names: list = field(default_factory=list)
    control_period: float = 0.1
    data_fingerprint: str = ''

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if not self.action_mean:
            self.action_mean = [0.0] * self.action_dim
        if not self.action_std:
            self.action_std = [1.0] * self.action_dim
        self.action_mean = [float(v) for v in self.action_mean]
        self.action_std = [float(v) for v in self.action_std]
        self.joint_names = [str(v) for v in self.joint_names]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for sizes that cannot build a model."""
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f'image_size {self.image_size} is not a multiple of patch_size '
                            f'{self.patch_size}')
        if self.encoder_width % self.encoder_heads:
            problems.append(f'encoder_width {self.encoder_width} is not divisible by '
                            f'encoder_heads {self.encoder_heads}')
        for name in ('image_size', 'patch_size', 'encoder_width', 'encoder_depth',
                     'encoder_heads', 'encoder_mlp', 'projector_hidden', 'latent_dim',
                     'predictor_depth', 'predictor_heads', 'predictor_head_dim',
                     'predictor_mlp', 'action_smoothed_dim', 'action_hidden', 'action_dim',
                     'frameskip', 'history', 'sigreg_directions'):
            if int(getattr(self, name)) < 1:
                problems.append(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.sigreg_knots < 2:
            problems.append(f'sigreg_knots must be >= 2, got {self.sigreg_knots}')
        for name in ('image_mean', 'image_std'):
            if len(getattr(self, name)) != 3:
                problems.append(f'{name} needs 3 values (RGB), got {getattr(self, name)}')
        if any(v <= 0 for v in self.image_std):
            problems.append(f'image_std must be positive, got {self.image_std}')
        for name in ('action_mean', 'action_std'):
            if len(getattr(self, name)) != self.action_dim:
                problems.append(f'{name} has {len(getattr(self, name))} values, action_dim is '
                                f'{self.action_dim}')
        if any(not v > 0 or not math.isfinite(v) for v in self.action_std):
            problems.append(f'action_std must be positive and finite, got {self.action_std}')
        if self.joint_names and len(self.joint_names) != self.action_dim:
            problems.append(f'{len(self.joint_names)} joint_names for action_dim '
                            f'{self.action_dim}')
        if problems:
            raise ValueError('invalid ModelConfig: ' + '; '.join(problems))

    # ----------------------------------------------------------------------------------------
    # Presets and serialisation

    @classmethod
    def build_preset(cls, name: str, **overrides) -> 'ModelConfig':
        """Build the ``paper`` or ``small`` preset, with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f'unknown model preset {name!r}; known: {sorted(PRESETS)}')
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f'unknown ModelConfig fields: {sorted(unknown)}')
        values = dict(PRESETS[name])
        values.update(overrides)
        values.setdefault('preset_name', name)
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        out['image_mean'] = list(self.image_mean)
        out['image_std'] = list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> 'ModelConfig':
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        values = dict(values)
        if 'preset' in values:  # accepted as an alias of preset_name
            values.setdefault('preset_name', values.pop('preset'))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown ModelConfig fields: {unknown}')
        return cls(**values)

    preset = _PresetAccessor()

    def replace(self, **changes) -> 'ModelConfig':
        return replace(self, **changes)

    # ----------------------------------------------------------------------------------------
    # Derived sizes

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def action_block_dim(self) -> int:
        """Size of one action block: ``frameskip`` concatenated actions."""
        return self.frameskip * self.action_dim

    # ----------------------------------------------------------------------------------------
    # Action normalisation (z-score per joint with the dataset statistics)

    def _stats(self, like, block: bool):
        mean, std = self.action_mean, self.action_std
        if block:
            mean, std = mean * self.frameskip, std * self.frameskip
        if isinstance(like, torch.Tensor):
            dtype = like.dtype if like.is_floating_point() else torch.float32
            return (torch.tensor(mean, dtype=dtype, device=like.device),
                    torch.tensor(std, dtype=dtype, device=like.device))
        dtype = like.dtype if np.issubdtype(np.asarray(like).dtype, np.floating) else np.float64
        return np.asarray(mean, dtype=dtype), np.asarray(std, dtype=dtype)

    def _check_last(self, actions, size: int, what: str) -> None:
        if actions.shape[-1] != size:
            raise ValueError(f'{what} must have last dimension {size}, got shape '
                             f'{tuple(actions.shape)}')

    def _zscore(self, values, block: bool, inverse: bool):
        values = values if isinstance(values, torch.Tensor) else np.asarray(values)
        if block:
            self._check_last(values, self.action_block_dim, 'action blocks')
        else:
            self._check_last(values, self.action_dim, 'actions')
        mean, std = self._stats(values, block)
        return values * std + mean if inverse else (values - mean) / std

    def normalize_actions(self, actions):
        """Raw actions ``(..., A)`` (radians) -> z-scored actions. Tensor or array in, same out."""
        return self._zscore(actions, block=False, inverse=False)

    def denormalize_actions(self, actions):
        """Z-scored actions ``(..., A)`` -> raw actions in radians."""
        return self._zscore(actions, block=False, inverse=True)

    def normalize_blocks(self, blocks):
        """Raw action blocks ``(..., frameskip*A)`` -> z-scored blocks."""
        return self._zscore(blocks, block=True, inverse=False)

    def denormalize_blocks(self, blocks):
        """Z-scored action blocks ``(..., frameskip*A)`` -> raw blocks in radians."""
        return self._zscore(blocks, block=True, inverse=True)

    def actions_to_blocks(self, actions):
        """``(..., K*frameskip, A)`` actions -> ``(..., K, frameskip*A)`` blocks (a reshape)."""
        self._check_last(actions, self.action_dim, 'actions')
        steps = actions.shape[-2]
        if steps % self.frameskip:
            raise ValueError(f'{steps} actions do not split into blocks of frameskip '
                             f'{self.frameskip}')
        return actions.reshape(*actions.shape[:-2], steps // self.frameskip,
                               self.action_block_dim)

    def blocks_to_actions(self, blocks):
        """``(..., K, frameskip*A)`` blocks -> ``(..., K*frameskip, A)`` actions (a reshape)."""
        self._check_last(blocks, self.action_block_dim, 'action blocks')
        return blocks.reshape(*blocks.shape[:-2], blocks.shape[-2] * self.frameskip,
                              self.action_dim)


PRESETS = {
    # Released LeWM configuration (research notes section 1).
    'paper': dict(
        image_size=224, patch_size=14, encoder_width=192, encoder_depth=12, encoder_heads=3,
        encoder_mlp=768, projector_hidden=2048, latent_dim=192, predictor_depth=6,
        predictor_heads=16, predictor_head_dim=64, predictor_mlp=2048, predictor_dropout=0.1,
        action_smoothed_dim=10, action_hidden=768, frameskip=5, history=3, action_dim=2,
        sigreg_directions=1024),
    # Same architecture sized for a 2-core CPU (training in minutes, planning at control
    # rate) and the 3-joint reach task; the sizes are justified with measurements in
    # docs/model.md.
    'small': dict(
        image_size=64, patch_size=8, encoder_width=96, encoder_depth=4, encoder_heads=3,
        encoder_mlp=384, projector_hidden=256, latent_dim=64, predictor_depth=2,
        predictor_heads=4, predictor_head_dim=16, predictor_mlp=256, predictor_dropout=0.1,
        action_smoothed_dim=10, action_hidden=256, frameskip=5, history=3, action_dim=3,
        sigreg_directions=256),
}
