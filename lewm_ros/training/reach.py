"""The visual reach task: reach the arm configuration shown in a goal image.

The protocol has the shape of the LeWM evaluation, with start states that no training episode
contains. An episode starts from a state of a fresh exploration episode, drawn with a seed the
training data does not use. The goal is the state that the exploration policy reached
``goal_offset`` steps after the start, shown to the controller as the image that
``ArmEnv.render_goal`` draws. The controller then has ``budget`` steps. Two success rules are
scored on the end-effector distance to the goal's end-effector position:

- reached (the LeWM rule): the distance is below ``success_radius`` at some step of the budget;
- reached and stayed: the distance is also below ``success_radius`` after the last step.

The arm starts at rest at the start configuration: joint velocities are zero, and the cube is
back at its default pose, so only the joint positions of the exploration state carry over.
"""

from dataclasses import asdict, dataclass
import logging
import time

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReachTask:
    """Parameters of the reach task.

    Attributes:
        goal_offset: exploration steps from the start state to the goal state.
        budget: control steps the controller gets (twice ``goal_offset`` by default).
        success_radius: end-effector distance to the goal that counts as reached (metres).
        policy: exploration policy that produces start and goal states.
        max_start_step: the start state is the state after a uniform random number of
            exploration steps in ``[0, max_start_step]``.
        min_goal_distance: start and goal end effectors must be at least this far apart
            (metres), so that no episode is a success before the first step. Defaults to
            ``success_radius``.
    """

    goal_offset: int = 25
    budget: int = 50
    success_radius: float = 0.05
    policy: str = 'waypoint'
    max_start_step: int = 50
    min_goal_distance: float | None = None

    def __post_init__(self) -> None:
        if self.goal_offset < 1 or self.budget < 1:
            raise ValueError(f'goal_offset and budget must be >= 1 step, got '
                             f'{self.goal_offset} and {self.budget}')
        if not self.success_radius > 0:
            raise ValueError(f'success_radius must be > 0 metres, got {self.success_radius}')
        if self.max_start_step < 0:
            raise ValueError(f'max_start_step must be >= 0, got {self.max_start_step}')
        if self.min_goal_distance is None:
            object.__setattr__(self, 'min_goal_distance', self.success_radius)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReachEpisode:
    """Start and goal of one reach episode (joint positions in radians, positions in metres)."""

    index: int
    start_qpos: np.ndarray
    goal_qpos: np.ndarray
    start_ee: np.ndarray
    goal_ee: np.ndarray

    @property
    def start_distance(self) -> float:
        return float(np.linalg.norm(self.start_ee - self.goal_ee))


def sample_episodes(env, task: ReachTask, count: int, seed: int,
                    max_tries: int = 20) -> list[ReachEpisode]:
    """Draw ``count`` reach episodes by running the exploration policy in ``env``.

    Episode ``i`` uses the generator ``default_rng([seed, i])`` so that each episode is
    reproducible alone. A draw whose goal lies within ``min_goal_distance`` of the start is
    redrawn with the next generator state.

    Raises:
        RuntimeError: when ``max_tries`` draws of one episode all start too close to the goal.
    """
    from lewm_ros.sim.policies import make_policy

    policy = make_policy(task.policy)
    episodes = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        for _ in range(max_tries):
            env.reset(seed=int(rng.integers(2**31)))
            policy.reset(env, rng)
            start_step = int(rng.integers(0, task.max_start_step + 1))
            for _ in range(start_step):
                env.step(policy.act(env))
            start_qpos, start_ee = env.qpos, env.ee_position()
            for _ in range(task.goal_offset):
                env.step(policy.act(env))
            goal_qpos, goal_ee = env.qpos, env.ee_position()
            if np.linalg.norm(goal_ee - start_ee) >= task.min_goal_distance:
                break
        else:
            raise RuntimeError(f'reach episode {index}: {max_tries} draws all had the goal '
                               f'within {task.min_goal_distance} m of the start')
        goal_qpos = np.clip(goal_qpos, env.joint_limits[:, 0], env.joint_limits[:, 1])
        start_qpos = np.clip(start_qpos, env.joint_limits[:, 0], env.joint_limits[:, 1])
        episodes.append(ReachEpisode(index, start_qpos, goal_qpos, start_ee, goal_ee))
    return episodes


def run_episode(env, episode: ReachEpisode, controller, task: ReachTask,
                record_frames: bool = False) -> dict:
    """Run ``controller`` on one episode and score it.

    The controller gets ``reset(env, goal_image, goal_qpos)`` once, then
    ``act(env, frame, step)`` before each step and ``observe(applied_action)`` after it.

    Returns:
        A dict with ``success`` (reached at some step), ``stayed`` (also within the radius at
        the end), ``final_distance``, ``best_distance``, ``start_distance`` (metres),
        ``first_success_step`` (1-based, None if never), ``distances`` per step, the
        controller's ``stats`` and, with ``record_frames``, ``frames`` and ``goal_image``.
    """
    env.reset(qpos=episode.start_qpos)
    goal_image = env.render_goal(episode.goal_qpos)
    controller.reset(env, goal_image, episode.goal_qpos)
    distances, frames = [], []
    start = time.perf_counter()
    for step in range(task.budget):
        frame = env.render()
        if record_frames:
            frames.append(frame)
        action = controller.act(env, frame, step)
        applied = env.step(action)
        controller.observe(applied)
        distances.append(float(np.linalg.norm(env.ee_position() - episode.goal_ee)))
    if record_frames:
        frames.append(env.render())
    distances = np.asarray(distances)
    within = distances < task.success_radius
    first = int(np.argmax(within)) + 1 if within.any() else None
    result = {
        'episode': episode.index,
        'success': bool(within.any()),
        'stayed': bool(within[-1]),
        'final_distance': float(distances[-1]),
        'best_distance': float(distances.min()),
        'start_distance': episode.start_distance,
        'first_success_step': first,
        'distances': distances.round(5).tolist(),
        'wall_time_s': time.perf_counter() - start,
        'stats': controller.stats(),
    }
    if record_frames:
        result['frames'] = frames
        result['goal_image'] = goal_image
    return result
