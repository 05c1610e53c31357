"""Planning cost over predicted latents.

Shapes: ``N`` candidates, ``H`` horizon blocks, ``D`` latent size, ``F`` frameskip, ``A`` joints.
"""

from dataclasses import dataclass
import math

import torch


@dataclass(frozen=True)
class GoalCost:
    """Squared L2 distance to the goal latent, with optional per-step and action terms.

    ``cost = final_weight * |z_H - g|^2 + step_weight * sum_h |z_h - g|^2
    + action_weight * sum_t |a_t|^2``, where the squared norms sum over latent dimensions, ``h``
    runs over all ``H`` predicted latents (the final one included) and ``a_t`` are the raw
    actions in radians. The defaults (final step only, no extra terms) are the LeWM planning
    objective.
    """

    final_weight: float = 1.0
    step_weight: float = 0.0
    action_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ('final_weight', 'step_weight', 'action_weight'):
            value = float(getattr(self, name))
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f'GoalCost.{name} must be finite and >= 0, got {value}')
            object.__setattr__(self, name, value)

    @property
    def uses_actions(self) -> bool:
        """True when the cost reads the raw actions (skip converting them otherwise)."""
        return self.action_weight > 0

    def __call__(self, latents: torch.Tensor, goal: torch.Tensor,
                 actions: torch.Tensor | None = None) -> torch.Tensor:
        """Cost of each candidate.

        Args:
            latents: predicted latents ``(N, H, D)``.
            goal: goal latent ``(D,)``.
            actions: raw actions ``(N, H*F, A)`` in radians; needed when ``action_weight > 0``.

        Returns:
            Costs ``(N,)``; NaN or inf where the inputs are not finite.
        """
        squared = (latents - goal).square().sum(dim=-1)  # (N, H)
        cost = self.final_weight * squared[:, -1]
        if self.step_weight:
            cost = cost + self.step_weight * squared.sum(dim=-1)
        if self.action_weight:
            if actions is None:
                raise ValueError('GoalCost with action_weight > 0 needs the raw actions')
            cost = cost + self.action_weight * actions.square().sum(dim=(-2, -1))
        return cost
