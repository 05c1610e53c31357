"""A world model with known linear latent dynamics, for testing and benchmarking planners.

``z_{h+1} = transition @ z_h + control @ u_h`` with ``u_h`` a normalised action block. It has
the ``config`` / ``rollout`` interface of :class:`lewm_ros.model.LeWM`, so planners run on it
unchanged, and its optimum can be computed in closed form.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class LinearModelConfig:
    """The part of a model config that a planner reads, plus the latent size."""

    latent_dim: int
    action_dim: int
    frameskip: int = 1
    history: int = 1
    action_mean: list = field(default_factory=list)
    action_std: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.action_mean:
            self.action_mean = [0.0] * self.action_dim
        if not self.action_std:
            self.action_std = [1.0] * self.action_dim

    @property
    def action_block_dim(self) -> int:
        return self.frameskip * self.action_dim


class LinearLatentModel:
    """Linear latent dynamics with the world-model rollout interface.

    Only the last history latent matters (the dynamics are Markov). ``rollout_calls`` and
    ``predictor_calls`` count calls so that tests can check how a planner uses the model.

    Args:
        transition: ``(D, D)`` matrix.
        control: ``(D, F*A)`` matrix applied to a normalised block.
        config: sizes and action statistics.
    """

    def __init__(self, transition: torch.Tensor, control: torch.Tensor,
                 config: LinearModelConfig) -> None:
        dim, block = config.latent_dim, config.action_block_dim
        if tuple(transition.shape) != (dim, dim) or tuple(control.shape) != (dim, block):
            raise ValueError(f'transition must be ({dim}, {dim}) and control ({dim}, {block}), '
                             f'got {tuple(transition.shape)} and {tuple(control.shape)}')
        self.config = config
        self.transition = transition
        self.control = control
        self.rollout_calls = 0
        self.predictor_calls = 0

    def step(self, latents: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """Advance latents ``(..., D)`` by normalised blocks ``(..., F*A)`` -> ``(..., D)``."""
        transition = self.transition.to(latents)
        control = self.control.to(latents)
        return latents @ transition.T + blocks.to(latents) @ control.T

    def rollout(self, history_latents: torch.Tensor, candidates: torch.Tensor,
                history_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(N, H, D)`` of candidates ``(N, H, F*A)`` from history ``(T, D)``."""
        self.rollout_calls += 1
        latent = history_latents[-1].expand(candidates.shape[0], -1)  # (N, D)
        outputs = []
        for h in range(candidates.shape[1]):
            self.predictor_calls += 1
            latent = self.step(latent, candidates[:, h])
            outputs.append(latent)
        return torch.stack(outputs, dim=1)

    def final_latent_map(self, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Matrices ``(P, M)`` with ``z_H = P @ z_0 + M @ blocks.flatten()``.

        ``P`` is ``(D, D)`` and ``M`` is ``(D, H*F*A)``; blocks ``(H, F*A)`` flatten row-major.
        """
        power = torch.eye(self.config.latent_dim, dtype=self.transition.dtype)
        columns = []
        for _ in range(horizon):
            columns.insert(0, power @ self.control)
            power = self.transition @ power
        return power, torch.cat(columns, dim=1)
