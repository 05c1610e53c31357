"""Receding-horizon latent planner: optimiser + cost + warm start + execution bookkeeping.

Shapes: ``T`` observed latents, ``D`` latent size, ``H`` horizon in blocks, ``F`` frameskip,
``A`` joints, ``N`` candidates. Blocks are normalised (z-scored per joint); actions are raw joint
deltas in radians (see docs/architecture.md).
"""

from dataclasses import dataclass, field
import logging
import math
import time

import torch

from .actions import ActionBounds, ActionScaler
from .cost import GoalCost
from .optimizers import CEMOptimizer, MPPIOptimizer, Optimizer

logger = logging.getLogger(__name__)

METHODS = ('cem', 'mppi')


@dataclass(frozen=True)
class PlannerConfig:
    """Runtime settings of a :class:`Planner` (the model's own settings come from its config).

    The defaults are the LeWM planning setup: CEM, 300 samples, 30 elites, 30 iterations,
    horizon 5 blocks, initial mean 0 and std 1 in normalised units, no early stop.

    Attributes:
        method: ``'cem'`` or ``'mppi'``.
        horizon: plan length in action blocks (``horizon * frameskip`` control steps).
        num_samples: candidates per iteration.
        num_elites: CEM elites per iteration.
        iterations: maximum optimiser iterations per plan.
        initial_std: CEM sampling std of the first iteration (normalised units).
        temperature: MPPI temperature, in cost units.
        noise_std: MPPI sampling std (normalised units).
        warm_start: start from the unexecuted tail of the previous plan instead of zeros.
        early_stop_patience: stop after this many iterations without relative elite-cost
            improvement above ``early_stop_rtol``; 0 disables it.
        early_stop_rtol: relative elite-cost improvement that counts as progress.
        evaluate_plan: roll out the returned plan once more (a batch of one, ``horizon``
            predictor calls) so that ``predicted_latents`` and the final distance belong to the
            returned actions. The LeWM reference planner does not do this.
        hold_margin: fraction by which the optimised plan must beat holding still; 0
            disables the check. Otherwise the optimised plan is rolled out next to holding
            still (every joint delta 0) and is returned only when its cost is lower than
            ``(1 - hold_margin)`` times the cost of holding still. Else the returned plan holds
            still. Near the goal, where every plan costs about the same, this stops the arm
            from wandering on the sampling noise of the optimiser. Not part of LeWM.
        seed: seed of the planner's random generator.
    """

    method: str = 'cem'
    horizon: int = 5
    num_samples: int = 300
    num_elites: int = 30
    iterations: int = 30
    initial_std: float = 1.0
    temperature: float = 1.0
    noise_std: float = 1.0
    warm_start: bool = True
    early_stop_patience: int = 0
    early_stop_rtol: float = 1e-3
    evaluate_plan: bool = True
    hold_margin: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'PlannerConfig.method must be one of {METHODS}, got '
                             f'{self.method!r}')
        if int(self.horizon) < 1:
            raise ValueError(f'PlannerConfig.horizon must be >= 1 block, got {self.horizon}')
        if not 0.0 <= self.hold_margin < 1.0:
            raise ValueError(f'PlannerConfig.hold_margin must be in [0, 1) (0 disables), got '
                             f'{self.hold_margin}')
        # Build the optimiser once so that every other value is checked here.
        make_optimizer(self)


def make_optimizer(config: PlannerConfig) -> Optimizer:
    """Build the CEM or MPPI optimiser that ``config`` describes."""
    common = dict(num_samples=config.num_samples, iterations=config.iterations,
                  early_stop_patience=config.early_stop_patience,
                  early_stop_rtol=config.early_stop_rtol)
    if config.method == 'cem':
        return CEMOptimizer(num_elites=config.num_elites, initial_std=config.initial_std,
                            **common)
    return MPPIOptimizer(temperature=config.temperature, noise_std=config.noise_std, **common)


@dataclass
class PlanResult:
    """Outcome of :meth:`Planner.plan`.

    Attributes:
        success: False when no usable plan exists (every candidate failed, or the returned
            plan's own rollout was not finite). Then ``actions`` and ``blocks`` are None and
            ``reason`` contains the cause.
        actions: raw joint deltas ``(H*F, A)`` in radians, inside the action bounds, on the
            device of the input latents.
        blocks: the same plan as normalised blocks ``(H, F*A)``.
        predicted_latents: predicted latents ``(H, D)`` of the returned plan (None when
            ``evaluate_plan`` is off or the plan failed).
        stats: ``wall_time_s``, ``iterations``, ``best_cost`` (lowest candidate cost seen),
            ``elite_cost`` (last iteration), ``plan_cost``, ``final_distance``,
            ``candidates_evaluated``, ``candidates_failed``, ``rollout_calls``,
            ``predictor_calls``, ``warm_started``, ``stopped_early``, ``best_history``,
            ``elite_history``, ``held`` (True when the plan is to hold still, see
            ``PlannerConfig.hold_margin``) and ``hold_cost`` (NaN when that check is off).
            ``final_distance`` is the L2 distance of the plan's last predicted latent to the
            goal. It and ``plan_cost`` are NaN when neither ``evaluate_plan`` nor the hold
            check is on. ``predictor_calls`` counts ``horizon`` per rollout call, as the
            model contract fixes.
        reason: why the plan failed; empty on success.
    """

    success: bool
    actions: torch.Tensor | None
    blocks: torch.Tensor | None
    predicted_latents: torch.Tensor | None
    stats: dict = field(default_factory=dict)
    reason: str = ''


class Planner:
    """Receding-horizon planner in a world model's latent space.

    Works with any ``model`` that has a ``config`` (``action_dim``, ``frameskip``,
    ``action_mean``, ``action_std``) and ``rollout(history_latents (T, D), candidates (N, H,
    F*A), history_actions (T-1, F*A) | None) -> (N, H, D)``. The caller encodes the observation
    history and the goal once per plan; the planner only calls ``rollout``, once per optimiser
    iteration with all candidates batched.

    Warm start: after a plan, call :meth:`record_executed` with the number of control steps of
    that plan the robot executed. The next plan starts from the remaining actions, shifted to the
    front, with the freed tail set to 0 (the dataset mean action). Call :meth:`reset` when the
    goal changes.

    Args:
        model: the world model (in eval mode if it is an ``nn.Module``).
        config: planner settings.
        cost: cost over predicted latents, called as ``cost(latents (N, H, D), goal (D,),
            actions (N, H*F, A) | None) -> (N,)``; default :class:`GoalCost` (final step
            only). Raw actions are passed unless the cost has ``uses_actions = False``.
        bounds: per-joint action bounds in radians; every candidate and the returned plan stay
            inside them. None leaves actions unbounded.
    """

    def __init__(self, model, config: PlannerConfig | None = None, cost=None,
                 bounds: ActionBounds | None = None) -> None:
        if not hasattr(model, 'config') or not callable(getattr(model, 'rollout', None)):
            raise TypeError(f'{type(model).__name__} cannot be planned with: it needs a '
                            '`config` and a `rollout(history_latents, candidates, '
                            'history_actions)` method')
        self.model = model
        self.config = config or PlannerConfig()
        self.cost = cost or GoalCost()
        self.bounds = bounds
        self.scaler = ActionScaler(model.config)
        if bounds is not None and bounds.action_dim != self.scaler.action_dim:
            raise ValueError(f'ActionBounds has {bounds.action_dim} joints, the model has '
                             f'action_dim {self.scaler.action_dim}')
        self.optimizer = make_optimizer(self.config)
        self._generator: torch.Generator | None = None
        self._previous: torch.Tensor | None = None  # last plan, normalised (H, F*A)
        self._executed = 0

    # ----------------------------------------------------------------------------------------
    # Execution bookkeeping

    def record_executed(self, steps: int) -> None:
        """Record that ``steps`` more control steps of the last plan were executed."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f'executed steps must be a non-negative integer, got {steps}')
        self._executed += int(steps)

    def reset(self) -> None:
        """Forget the previous plan (use when the goal changes); the random stream continues."""
        self._previous = None
        self._executed = 0

    @property
    def plan_steps(self) -> int:
        """Control steps in one plan: ``horizon * frameskip``."""
        return self.config.horizon * self.scaler.frameskip

    # ----------------------------------------------------------------------------------------
    # Planning

    def plan(self, history_latents: torch.Tensor, goal_latent: torch.Tensor,
             history_actions: torch.Tensor | None = None) -> PlanResult:
        """Plan an action sequence that drives the predicted latent to the goal.

        Args:
            history_latents: observed latents ``(T, D)``, oldest first, already encoded.
            goal_latent: goal latent ``(D,)``, already encoded.
            history_actions: raw actions ``((T-1)*F, A)`` in radians executed between the
                observed latents; required by the model when ``T > 1``.

        Returns:
            A :class:`PlanResult`. Raises ValueError for inputs of the wrong shape or with
            non-finite values, and when the model is in training mode.
        """
        start = time.perf_counter()
        self._check_model_mode()
        latents, goal, past_blocks = self._check_inputs(history_latents, goal_latent,
                                                        history_actions)
        config = self.config
        counters = {'rollouts': 0}

        def rollout(candidates: torch.Tensor) -> torch.Tensor:
            counters['rollouts'] += 1
            return self.model.rollout(latents, candidates, past_blocks)

        def objective(candidates: torch.Tensor) -> torch.Tensor:
            return self._costs(rollout(candidates), goal, candidates)

        with torch.no_grad():
            lower, upper = self.scaler.block_bounds(self.bounds, config.horizon, latents)
            initial, warm = self._initial_mean(latents)
            result = self.optimizer.optimize(objective, initial, lower, upper,
                                             self._generator_for(latents.device))
            stats = {
                'iterations': result.iterations,
                'best_cost': result.best_cost,
                'elite_cost': result.elite_cost,
                'plan_cost': math.nan,
                'final_distance': math.nan,
                'candidates_evaluated': result.evaluated,
                'candidates_failed': result.failed,
                'warm_started': warm,
                'stopped_early': result.stopped_early,
                'held': False,
                'hold_cost': math.nan,
                'best_history': result.best_history,
                'elite_history': result.elite_history,
            }
            if result.best is None:
                return self._failure(
                    start, stats, counters,
                    f'all {result.evaluated} candidates failed (NaN or infinite cost or '
                    'predicted latent)')

            blocks = torch.clamp(result.solution, min=lower, max=upper)  # (H, F*A)
            predicted = None
            check_hold = config.hold_margin > 0
            if config.evaluate_plan or check_hold:
                # Candidate 0 is the optimised plan, candidate 1 (with the hold check) holding
                # still; both are rolled out in one batch.
                candidates = blocks.unsqueeze(0)
                if check_hold:
                    candidates = torch.stack([blocks, self._hold_blocks(lower, upper)])
                rolled = rollout(candidates)  # (1 or 2, H, D)
                costs = self._costs(rolled, goal, candidates)
                chosen = 0
                if check_hold:
                    stats['hold_cost'] = float(costs[1])
                    if not float(costs[0]) < (1.0 - config.hold_margin) * stats['hold_cost']:
                        chosen = 1
                        stats['held'] = True
                blocks = candidates[chosen]
                plan_cost = float(costs[chosen])
                if not math.isfinite(plan_cost):
                    return self._failure(start, stats, counters,
                                         'the rollout of the returned plan is not finite')
                stats['plan_cost'] = plan_cost
                stats['final_distance'] = float(
                    torch.linalg.vector_norm(rolled[chosen, -1] - goal))
                if config.evaluate_plan:
                    predicted = rolled[chosen]
            actions = self.scaler.clamp_actions(self.scaler.blocks_to_actions(blocks),
                                                self.bounds)  # (H*F, A)
            if stats['held']:
                actions = torch.zeros_like(actions)  # exact, free of rounding in the scaling

        self._previous = blocks
        self._executed = 0
        self._finish_stats(start, stats, counters)
        logger.debug('plan: %d iterations, elite cost %.4g, %.1f ms', result.iterations,
                     result.elite_cost, 1e3 * stats['wall_time_s'])
        return PlanResult(success=True, actions=actions, blocks=blocks,
                          predicted_latents=predicted, stats=stats)

    # ----------------------------------------------------------------------------------------
    # Helpers

    def _costs(self, predicted: torch.Tensor, goal: torch.Tensor,
               candidates: torch.Tensor) -> torch.Tensor:
        """Costs ``(N,)`` of predicted latents ``(N, H, D)``; ``+inf`` marks a failure."""
        uses_actions = getattr(self.cost, 'uses_actions', True)
        actions = self.scaler.blocks_to_actions(candidates) if uses_actions else None
        costs = self.cost(predicted, goal, actions)
        # A NaN latent may still give a finite cost (a zero weight, a NaN-ignoring cost).
        broken = torch.isnan(predicted).flatten(1).any(dim=1) | ~torch.isfinite(costs)
        return torch.where(broken, torch.full_like(costs, math.inf), costs)

    def _hold_blocks(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Return the plan that holds every joint still, as normalised blocks ``(H, F*A)``."""
        still = torch.zeros((self.plan_steps, self.scaler.action_dim), dtype=lower.dtype,
                            device=lower.device)
        blocks = self.scaler.actions_to_blocks(still)
        return torch.clamp(blocks, min=lower, max=upper)

    def _initial_mean(self, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
        shape = (self.config.horizon, self.scaler.block_dim)
        zeros = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if not self.config.warm_start or self._previous is None:
            return zeros, False
        if self._executed >= self.plan_steps:
            return zeros, False
        # Shift by control steps, not blocks, so partial blocks keep their alignment.
        previous = self._previous.to(dtype=like.dtype, device=like.device)
        steps = previous.reshape(self.plan_steps, self.scaler.action_dim)  # (H*F, A)
        tail = torch.zeros((self._executed, self.scaler.action_dim), dtype=like.dtype,
                           device=like.device)
        shifted = torch.cat([steps[self._executed:], tail]).reshape(shape)
        return shifted, True

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            if self._generator is not None:
                logger.info('planner inputs moved to %s; random generator reseeded with %d',
                            device, self.config.seed)
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.config.seed)
        return self._generator

    def _check_model_mode(self) -> None:
        if getattr(self.model, 'training', False):
            raise ValueError('the model is in training mode: dropout and BatchNorm batch '
                             'statistics make candidate costs random and dependent on each '
                             'other; call model.eval() before planning')

    def _check_inputs(self, history_latents, goal_latent, history_actions):
        if not isinstance(history_latents, torch.Tensor) or history_latents.dim() != 2 \
                or history_latents.shape[0] < 1:
            raise ValueError(f'history_latents must be a tensor (T, D) with T >= 1, got '
                             f'{_describe(history_latents)}')
        dim = history_latents.shape[1]
        if not isinstance(goal_latent, torch.Tensor) or tuple(goal_latent.shape) != (dim,):
            raise ValueError(f'goal_latent must be a tensor ({dim},) like the history latents, '
                             f'got {_describe(goal_latent)}')
        if not torch.isfinite(history_latents).all():
            raise ValueError('history_latents contain NaN or inf; re-encode the observations')
        if not torch.isfinite(goal_latent).all():
            raise ValueError('goal_latent contains NaN or inf; re-encode the goal image')
        goal = goal_latent.to(dtype=history_latents.dtype, device=history_latents.device)
        past = None
        if history_actions is not None:
            steps = (history_latents.shape[0] - 1) * self.scaler.frameskip
            expected = (steps, self.scaler.action_dim)
            if not isinstance(history_actions, torch.Tensor) \
                    or tuple(history_actions.shape) != expected:
                raise ValueError(f'history_actions must be the raw actions {expected} executed '
                                 f'between the {history_latents.shape[0]} history latents, got '
                                 f'{_describe(history_actions)}')
            if not torch.isfinite(history_actions).all():
                raise ValueError('history_actions contain NaN or inf; an episode\'s last '
                                 'action is NaN, pass only actions that were executed')
            actions = history_actions.to(dtype=history_latents.dtype,
                                         device=history_latents.device)
            past = self.scaler.actions_to_blocks(actions)  # (T-1, F*A)
        return history_latents, goal, past

    def _finish_stats(self, start: float, stats: dict, counters: dict) -> None:
        stats['rollout_calls'] = counters['rollouts']
        stats['predictor_calls'] = counters['rollouts'] * self.config.horizon
        stats['wall_time_s'] = time.perf_counter() - start

    def _failure(self, start: float, stats: dict, counters: dict, reason: str) -> PlanResult:
        self._finish_stats(start, stats, counters)
        logger.warning('planning failed: %s', reason)
        return PlanResult(success=False, actions=None, blocks=None, predicted_latents=None,
                          stats=stats, reason=reason)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f'a tensor of shape {tuple(value.shape)}'
    return f'{type(value).__name__}'
