"""Exploration policies for data collection.

A policy returns the next action for an :class:`~lewm_ros.sim.arm_env.ArmEnv`: a joint delta
``(A,)`` in radians, the same unit ``ArmEnv.step`` takes. Policies draw from the generator given
to :meth:`ExplorationPolicy.reset`, so an episode is reproducible from one seed.

- ``waypoint``: moves towards random clear configurations drawn uniformly within the joint
  limits, at a random speed per waypoint, with Gaussian noise on every step and occasional
  holds. It covers the whole workspace, so the data contains far reaches as well as the start.
- ``random_delta``: independent uniform deltas within ``max_delta`` (a random walk of the
  targets). It covers less ground per step but shows every direction from every state.
"""

import numpy as np


class ExplorationPolicy:
    """Base class: ``reset(env, rng)`` at the start of an episode, then ``act(env)`` each step."""

    name = ''

    def reset(self, env, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, env) -> np.ndarray:
        raise NotImplementedError


class RandomDeltaPolicy(ExplorationPolicy):
    """Uniform joint deltas in ``[-scale * max_delta, scale * max_delta]`` per joint."""

    name = 'random_delta'

    def __init__(self, scale: float = 1.0) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f'scale must be in (0, 1], got {scale}')
        self.scale = scale

    def act(self, env) -> np.ndarray:
        limit = self.scale * env.max_delta
        return self.rng.uniform(-limit, limit)


class RandomWaypointPolicy(ExplorationPolicy):
    """Move towards random clear configurations with bounded steps, noise and holds.

    Args:
        noise: standard deviation of the per-step noise as a fraction of ``max_delta``.
        speed_range: the step towards a waypoint is this fraction of ``max_delta``, drawn
            once per waypoint.
        hold_probability: probability of holding still after reaching a waypoint.
        hold_steps: inclusive range of the length of a hold (steps).
        tolerance: distance to the waypoint target (radians, per joint) that counts as reached.
        max_steps_per_waypoint: give up on a waypoint after this many steps (the arm may be
            blocked by the table or the cube on the way).
    """

    name = 'waypoint'

    def __init__(self, noise: float = 0.15, speed_range=(0.3, 1.0),
                 hold_probability: float = 0.2, hold_steps=(2, 6), tolerance: float = 0.05,
                 max_steps_per_waypoint: int = 40) -> None:
        low, high = speed_range
        if not 0 < low <= high <= 1:
            raise ValueError(f'speed_range must satisfy 0 < low <= high <= 1, got {speed_range}')
        if noise < 0:
            raise ValueError(f'noise must be >= 0, got {noise}')
        self.noise = noise
        self.speed_range = (float(low), float(high))
        self.hold_probability = hold_probability
        self.hold_steps = (int(hold_steps[0]), int(hold_steps[1]))
        self.tolerance = tolerance
        self.max_steps_per_waypoint = max_steps_per_waypoint

    def reset(self, env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self._hold = 0
        self._new_waypoint(env)

    def _new_waypoint(self, env) -> None:
        self.waypoint = env.sample_configuration(self.rng)
        self._speed = self.rng.uniform(*self.speed_range)
        self._steps = 0

    def act(self, env) -> np.ndarray:
        if self._hold > 0:
            self._hold -= 1
            return np.zeros(env.num_joints)

        error = self.waypoint - env.q_cmd
        self._steps += 1
        if np.all(np.abs(error) < self.tolerance) or self._steps > self.max_steps_per_waypoint:
            if self.rng.random() < self.hold_probability:
                self._hold = int(self.rng.integers(self.hold_steps[0], self.hold_steps[1] + 1))
            self._new_waypoint(env)
            error = self.waypoint - env.q_cmd

        # Scale the whole step so that all joints arrive together (a straight line in joint
        # space) and no joint exceeds its share of max_delta.
        bound = self._speed * env.max_delta
        ratio = np.max(np.abs(error) / bound)
        step = error / max(ratio, 1.0)
        step = step + self.noise * env.max_delta * self.rng.standard_normal(env.num_joints)
        return np.clip(step, -env.max_delta, env.max_delta)


POLICIES = {cls.name: cls for cls in (RandomWaypointPolicy, RandomDeltaPolicy)}


def make_policy(name: str, **kwargs) -> ExplorationPolicy:
    """Build the policy registered as ``name`` (see :data:`POLICIES`).

    Raises:
        ValueError: for an unknown name.
    """
    try:
        policy_class = POLICIES[name]
    except KeyError:
        raise ValueError(
            f'unknown exploration policy {name!r}; choose one of {sorted(POLICIES)}') from None
    return policy_class(**kwargs)
