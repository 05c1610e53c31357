"""Controllers for the reach task: the world-model planner and the two baselines.

Every controller has ``reset(env, goal_image, goal_qpos)``, ``act(env, frame, step) -> (A,)``
(a joint delta in radians), ``observe(applied)`` and ``stats() -> dict``.
"""

from dataclasses import asdict, dataclass
import logging

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanningSetup:
    """How the evaluation drives the planner; the planner's own settings are separate.

    Attributes:
        replan_every: control steps executed from each plan before the next one. The LeWM
            evaluation executes the whole plan (``horizon * frameskip`` steps).
        history: observed latents given to the planner, one every ``frameskip`` steps, up to
            the model's history (1 in the LeWM evaluation).
        step_weight: weight of the summed per-step goal distances in the cost.
        action_weight: weight of the summed squared joint deltas (rad^2) in the cost.
    """

    replan_every: int = 5
    history: int = 1
    step_weight: float = 0.0
    action_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.replan_every < 1:
            raise ValueError(f'replan_every must be >= 1 step, got {self.replan_every}')
        if self.history < 1:
            raise ValueError(f'history must be >= 1 latent, got {self.history}')

    def to_dict(self) -> dict:
        return asdict(self)


class PlannerController:
    """Receding-horizon control with a LeWM model and a :class:`~lewm_ros.planning.Planner`.

    Every ``replan_every`` steps the current frame (and up to ``history - 1`` earlier frames,
    ``frameskip`` steps apart) is encoded, the planner optimises a plan towards the latent of
    the goal image, and the first ``replan_every`` actions of the plan are executed.
    """

    name = 'lewm'

    def __init__(self, model, planner_config, setup: PlanningSetup, bounds) -> None:
        from lewm_ros.planning import GoalCost, Planner

        self.model = model.eval()
        self.setup = setup
        self.frameskip = model.config.frameskip
        self.history = min(setup.history, model.config.history)
        cost = GoalCost(final_weight=1.0, step_weight=setup.step_weight,
                        action_weight=setup.action_weight)
        self.planner = Planner(model, planner_config, cost=cost, bounds=bounds)
        if setup.replan_every > self.planner.plan_steps:
            raise ValueError(f'replan_every {setup.replan_every} is longer than a plan '
                             f'({self.planner.plan_steps} steps); lower it or raise the '
                             'horizon')

    def reset(self, env, goal_image, goal_qpos) -> None:
        import torch

        self.planner.reset()
        with torch.no_grad():
            self.goal_latent = self.model.encode_frames(goal_image)[0]
        self.latents = {}  # step -> latent (D,)
        self.applied = []
        self.queue = []
        self.plan_times = []
        self.plan_distances = []
        self.held_plans = 0
        self.failures = 0
        self.executed = 0

    def _encode(self, frame, step: int) -> None:
        import torch

        with torch.no_grad():
            self.latents[step] = self.model.encode_frames(frame)[0]

    def _history(self, step: int):
        """Return the latents ``(T, D)`` up to ``step`` and the raw actions between them."""
        import torch

        steps = [step]
        while len(steps) < self.history and steps[-1] - self.frameskip in self.latents:
            steps.append(steps[-1] - self.frameskip)
        steps.reverse()
        latents = torch.stack([self.latents[s] for s in steps])
        actions = None
        if len(steps) > 1:
            rows = np.asarray(self.applied[steps[0]:step], dtype=np.float32)
            actions = torch.from_numpy(rows).to(latents.device, latents.dtype)
        return latents, actions

    def act(self, env, frame, step: int) -> np.ndarray:
        replan = not self.queue or step % self.setup.replan_every == 0
        if replan or step % self.frameskip == 0:
            self._encode(frame, step)
        if replan:
            if self.executed:
                self.planner.record_executed(self.executed)
            latents, actions = self._history(step)
            result = self.planner.plan(latents, self.goal_latent, actions)
            self.plan_times.append(result.stats['wall_time_s'])
            if result.success:
                plan = result.actions.detach().cpu().numpy().astype(np.float64)
                self.plan_distances.append(result.stats['final_distance'])
                self.held_plans += bool(result.stats['held'])
            else:
                self.failures += 1
                plan = np.zeros((self.setup.replan_every, env.num_joints))
            self.queue = list(plan[:self.setup.replan_every])
            self.executed = 0
        self.executed += 1
        return self.queue.pop(0)

    def observe(self, applied) -> None:
        self.applied.append(np.asarray(applied, dtype=np.float64))

    def stats(self) -> dict:
        times = np.asarray(self.plan_times) if self.plan_times else np.zeros(1)
        return {'plans': len(self.plan_times), 'plan_failures': self.failures,
                'plans_held': self.held_plans,
                'plan_time_mean_s': float(times.mean()), 'plan_time_max_s': float(times.max()),
                'plan_times_s': [round(t, 5) for t in self.plan_times]}


class RandomController:
    """The random baseline: uniform joint deltas within the action bounds (``random_delta``)."""

    name = 'random'

    def __init__(self, seed: int = 0) -> None:
        from lewm_ros.sim.policies import make_policy

        self.policy = make_policy('random_delta')
        self.seed = seed
        self.episode = 0

    def reset(self, env, goal_image, goal_qpos) -> None:
        self.policy.reset(env, np.random.default_rng([self.seed, self.episode]))
        self.episode += 1

    def act(self, env, frame, step: int) -> np.ndarray:
        return self.policy.act(env)

    def observe(self, applied) -> None:
        pass

    def stats(self) -> dict:
        return {'plans': 0}


class OracleController:
    """The oracle baseline: moves straight to the goal joint positions, which it is given.

    Each step commands the remaining joint error scaled so that no joint exceeds its
    ``max_delta``, so all joints arrive together on a straight line in joint space.
    """

    name = 'oracle'

    def reset(self, env, goal_image, goal_qpos) -> None:
        self.goal = np.asarray(goal_qpos, dtype=np.float64)

    def act(self, env, frame, step: int) -> np.ndarray:
        error = self.goal - env.q_cmd
        ratio = np.max(np.abs(error) / env.max_delta)
        return error / max(ratio, 1.0)

    def observe(self, applied) -> None:
        pass

    def stats(self) -> dict:
        return {'plans': 0}
