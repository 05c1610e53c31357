"""Action bounds and the conversions between raw joint deltas and normalised action blocks.

Units follow docs/architecture.md: an action is the change of the commanded joint positions over
one control step, in radians, shape ``(A,)``. A block is ``frameskip`` consecutive actions
concatenated, ``(F*A,)``, z-scored per joint with the model's ``action_mean`` / ``action_std``.
"""

from dataclasses import dataclass
import math

import torch


@dataclass(frozen=True)
class ActionBounds:
    """Per-joint limits of one action (joint-position change per control step), in radians.

    ``low[j] <= action[j] <= high[j]`` for every joint ``j``. Infinite values leave a side open.
    """

    low: tuple
    high: tuple

    def __post_init__(self) -> None:
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        object.__setattr__(self, 'low', low)
        object.__setattr__(self, 'high', high)
        if len(low) != len(high):
            raise ValueError(f'ActionBounds: low has {len(low)} values and high has '
                             f'{len(high)}; give one value per joint in both')
        if not low:
            raise ValueError('ActionBounds: low and high are empty; give one value per joint')
        for j, (lo, hi) in enumerate(zip(low, high)):
            if math.isnan(lo) or math.isnan(hi):
                raise ValueError(f'ActionBounds: joint {j} has a NaN bound ({lo}, {hi})')
            if lo > hi:
                raise ValueError(f'ActionBounds: joint {j} has low {lo} > high {hi}; '
                                 'swap them')

    @classmethod
    def symmetric(cls, max_delta, action_dim: int | None = None) -> 'ActionBounds':
        """Build ``[-max_delta, max_delta]`` per joint.

        Args:
            max_delta: largest joint-position change per control step in radians, one value
                for all joints or a sequence with one value per joint.
            action_dim: number of joints, required when ``max_delta`` is a single number.
        """
        if isinstance(max_delta, (int, float)):
            if action_dim is None:
                raise ValueError('ActionBounds.symmetric: a single max_delta needs action_dim')
            max_delta = [float(max_delta)] * action_dim
        values = [float(v) for v in max_delta]
        if any(not v >= 0 for v in values):
            raise ValueError(f'ActionBounds.symmetric: max_delta must be >= 0, got {values}')
        return cls(low=tuple(-v for v in values), high=tuple(values))

    @property
    def action_dim(self) -> int:
        return len(self.low)


class ActionScaler:
    """Converter between raw actions in radians and the normalised blocks of the model.

    Built from a model config (any object with ``action_dim``, ``frameskip``, ``action_mean``
    and ``action_std``). Tensors are created on the device and dtype of the input.
    """

    def __init__(self, config) -> None:
        self.action_dim = int(config.action_dim)
        self.frameskip = int(config.frameskip)
        self.mean = [float(v) for v in config.action_mean]
        self.std = [float(v) for v in config.action_std]
        if self.action_dim < 1 or self.frameskip < 1:
            raise ValueError(f'model config has action_dim {self.action_dim} and frameskip '
                             f'{self.frameskip}; both must be >= 1')
        if len(self.mean) != self.action_dim or len(self.std) != self.action_dim:
            raise ValueError(f'model config has {len(self.mean)} action_mean and '
                             f'{len(self.std)} action_std values for action_dim '
                             f'{self.action_dim}')
        if any(not (s > 0 and math.isfinite(s)) for s in self.std):
            raise ValueError(f'model config action_std must be positive and finite, got '
                             f'{self.std}')

    @property
    def block_dim(self) -> int:
        return self.frameskip * self.action_dim

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device)
        return mean, std

    def blocks_to_actions(self, blocks: torch.Tensor) -> torch.Tensor:
        """Normalised blocks ``(..., H, F*A)`` -> raw actions ``(..., H*F, A)`` in radians."""
        mean, std = self._stats(blocks)
        steps = blocks.reshape(*blocks.shape[:-2], blocks.shape[-2] * self.frameskip,
                               self.action_dim)
        return steps * std + mean

    def actions_to_blocks(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions ``(..., K*F, A)`` in radians -> normalised blocks ``(..., K, F*A)``."""
        if actions.shape[-1] != self.action_dim or actions.shape[-2] % self.frameskip:
            raise ValueError(f'actions of shape {tuple(actions.shape)} do not split into '
                             f'blocks of frameskip {self.frameskip} x action_dim '
                             f'{self.action_dim}; pass (K*{self.frameskip}, '
                             f'{self.action_dim}) radians')
        mean, std = self._stats(actions)
        normalised = (actions - mean) / std
        return normalised.reshape(*actions.shape[:-2], actions.shape[-2] // self.frameskip,
                                  self.block_dim)

    def block_bounds(self, bounds: ActionBounds | None, horizon: int,
                     like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised lower and upper limits ``(H, F*A)`` of every element of a plan.

        Without bounds both limits are infinite, so clamping leaves candidates unchanged.
        """
        if bounds is None:
            low = torch.full((self.action_dim,), -math.inf, dtype=like.dtype,
                             device=like.device)
            high = -low
        else:
            if bounds.action_dim != self.action_dim:
                raise ValueError(f'ActionBounds has {bounds.action_dim} joints, the model has '
                                 f'action_dim {self.action_dim}')
            mean, std = self._stats(like)
            low = (torch.tensor(bounds.low, dtype=like.dtype, device=like.device) - mean) / std
            high = (torch.tensor(bounds.high, dtype=like.dtype, device=like.device) - mean) / std
        # One block repeats the per-joint limits frameskip times ([a_t, a_t+1, ...]).
        low = low.repeat(self.frameskip).expand(horizon, self.block_dim).contiguous()
        high = high.repeat(self.frameskip).expand(horizon, self.block_dim).contiguous()
        return low, high

    def clamp_actions(self, actions: torch.Tensor, bounds: ActionBounds | None) -> torch.Tensor:
        """Clamp raw actions ``(..., A)`` to the bounds (undoes rounding of the conversion)."""
        if bounds is None:
            return actions
        low = torch.tensor(bounds.low, dtype=actions.dtype, device=actions.device)
        high = torch.tensor(bounds.high, dtype=actions.dtype, device=actions.device)
        return torch.clamp(actions, min=low, max=high)
