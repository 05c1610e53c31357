"""``planner_node``: receding-horizon planning in the latent space of a LeWM checkpoint.

The node keeps the latent history the predictor needs: ``history`` latents of the checkpoint,
``frameskip`` control steps apart, and the actions the node itself commanded between them.
Every ``replan_every_steps`` control steps a worker thread plans towards the latched goal latent.
Each plan is published as a ``trajectory_msgs/JointTrajectory`` of absolute joint targets, one
point per control period, stamped with the observation the plan started from. The targets are
the latest measured positions plus the cumulative sum of the planned joint deltas.

Latents are rejected (counted in diagnostics, with a throttled warning) when they are older than
``max_latent_age`` on the node clock, have the wrong size, or come from another model than the
loaded checkpoint (the latched model info names a different weights sha256 or data
fingerprint). Latents that arrive before any model info are rejected too, unless
``require_model_info`` is false.

Surprise: after every plan the node remembers the latent predicted after the plan's first
block; when the latent of that step arrives, it publishes their L2 distance on
``lewm/surprise`` (``std_msgs/Float64``).
"""

from collections import deque
import math
import threading
import time

from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros.nodes import common

WARN_THROTTLE_S = 5.0
MODEL_INFO_GRACE_S = 5.0  # wall-clock s after start-up in which missing model info is expected
# Identity fields of the model-info JSON that must match the loaded checkpoint when present.
IDENTITY_KEYS = ('sha256', 'weights_sha256', 'data_fingerprint')


class LatentHistory:
    """Recent latents and commanded joint targets, indexed by control step.

    ``targets[k]`` is the absolute joint target ``(A,)`` commanded for the end of step ``k``, so
    the action of step ``k`` (applied after the frame of step ``k``) is
    ``targets[k] - targets[k-1]``, the convention of docs/architecture.md. :meth:`window`
    returns the longest history (up to ``history`` latents spaced ``frameskip`` steps apart)
    for which every latent and every action in between is known.
    """

    def __init__(self, history: int, frameskip: int) -> None:
        self.history = history
        self.frameskip = frameskip
        self.latents: dict[int, np.ndarray] = {}
        self.targets: dict[int, np.ndarray] = {}
        self._order = deque(maxlen=4 * (history * frameskip + 1))

    def add_latent(self, step: int, latent: np.ndarray) -> None:
        if len(self._order) == self._order.maxlen:
            oldest = self._order[0]
            self.latents.pop(oldest, None)
            for old in [k for k in self.targets if k < oldest - 1]:
                del self.targets[old]
        self._order.append(step)
        self.latents[step] = latent

    def record_targets(self, first_step: int, targets: np.ndarray, from_step: int) -> None:
        """Record plan targets ``(K, A)`` for steps ``first_step..+K-1``, from ``from_step`` on.

        Steps before ``from_step`` had passed when the plan was published, so the previous
        plan's targets were executed there and are kept.
        """
        for i, target in enumerate(targets):
            if first_step + i >= from_step:
                self.targets[first_step + i] = target

    def actions(self, start: int, count: int) -> list | None:
        """Return the actions ``(A,)`` of steps ``start..start+count-1``, or None if unknown."""
        needed = range(start - 1, start + count)
        if any(k not in self.targets for k in needed):
            return None
        return [self.targets[k] - self.targets[k - 1] for k in range(start, start + count)]

    def window(self, step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Return latents ``(T, D)`` ending at ``step`` and actions ``((T-1)*F, A)`` or None."""
        latents = [self.latents[step]]
        actions = []
        for k in range(1, self.history):
            start = step - k * self.frameskip
            block = self.actions(start, self.frameskip)
            if start not in self.latents or block is None:
                break
            latents.insert(0, self.latents[start])
            actions = block + actions
        if len(latents) == 1:
            return np.stack(latents), None
        return np.stack(latents), np.stack(actions)


class PlannerNode(Node):
    """Plan with CEM or MPPI on a worker thread, so that callbacks only queue work."""

    def __init__(self) -> None:
        super().__init__('planner_node')
        import torch

        from lewm_ros import paths
        from lewm_ros.model import load_checkpoint, read_checkpoint_config
        from lewm_ros.planning import ActionBounds, GoalCost, Planner, PlannerConfig

        self._torch = torch
        self._declare_parameters()
        threads = int(self.get_parameter('torch_threads').value)
        if threads > 0:
            torch.set_num_threads(threads)

        model_path = paths.resolve(self.get_parameter('model').value)
        device = self.get_parameter('device').value
        self.model = load_checkpoint(model_path, device=device)
        self.config = self.model.config
        document = read_checkpoint_config(model_path)
        self.identity = {
            'sha256': (document.get('weights') or {}).get('sha256') or '',
            'data_fingerprint': self.config.data_fingerprint,
        }
        self.joint_names = list(self.config.joint_names) or self._joints_parameter
        if len(self.joint_names) != self.config.action_dim:
            raise ValueError(f'the checkpoint has no joint_names and parameter joints lists '
                             f'{len(self.joint_names)} joints for action_dim '
                             f'{self.config.action_dim}; list the joints in action order')
        period = float(self.get_parameter('control_period').value)
        self.control_period = period if period > 0 else float(self.config.control_period)
        self.frameskip = int(self.config.frameskip)

        planner_config = PlannerConfig(
            method=self.get_parameter('optimizer').value,
            horizon=self.get_parameter('horizon').value,
            num_samples=self.get_parameter('samples').value,
            num_elites=self.get_parameter('elites').value,
            iterations=self.get_parameter('iterations').value,
            initial_std=self.get_parameter('initial_std').value,
            temperature=self.get_parameter('temperature').value,
            noise_std=self.get_parameter('noise_std').value,
            warm_start=self.get_parameter('warm_start').value,
            early_stop_patience=self.get_parameter('early_stop_patience').value,
            hold_margin=self.get_parameter('hold_margin').value,
            seed=self.get_parameter('seed').value)
        cost = GoalCost(final_weight=self.get_parameter('final_weight').value,
                        step_weight=self.get_parameter('step_weight').value,
                        action_weight=self.get_parameter('action_weight').value)
        bounds = ActionBounds.symmetric(self._action_bound())
        self.planner = Planner(self.model, planner_config, cost, bounds)
        self.bounds = bounds

        self.replan_every = int(self.get_parameter('replan_every_steps').value)
        if self.replan_every < 1:
            raise ValueError(f'replan_every_steps must be >= 1, got {self.replan_every}')
        self.max_latent_age = float(self.get_parameter('max_latent_age').value)
        self.require_model_info = bool(self.get_parameter('require_model_info').value)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        history = int(self.get_parameter('history_latents').value)
        if history < 0:
            raise ValueError(f'history_latents must be >= 0 (0 takes the checkpoint history '
                             f'{self.config.history}), got {history}')
        history = min(history, self.config.history) if history else self.config.history
        self.history = LatentHistory(history, self.frameskip)
        self._job = None
        self._busy = False
        self._stopping = False
        self._goal: np.ndarray | None = None
        self._reset_planner = False
        self._joint_positions: dict[str, float] = {}
        self._model_info: dict | None = None
        self._last_plan_step: int | None = None
        self._latest_step = -1  # control step of the newest accepted latent
        self._expected: tuple[int, np.ndarray] | None = None  # (step, predicted latent)
        self.counters = {'latents': 0, 'plans': 0, 'plans_held': 0, 'plan_failures': 0,
                         'overruns': 0,
                         'rejected_stale': 0, 'rejected_size': 0, 'rejected_model': 0,
                         'rejected_no_model_info': 0, 'rejected_invalid': 0}
        self.last = {'latency_s': math.nan, 'cost': math.nan, 'predicted_distance': math.nan,
                     'surprise': math.nan, 'latents_in_last_plan': 0}

        self._started = time.monotonic()
        self._create_interfaces()
        self._worker = threading.Thread(target=self._work, name='planner_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'loaded {model_path} (latent size {self.config.latent_dim}, history '
            f'{self.config.history}, frameskip {self.frameskip}) on {device}; '
            f'{planner_config.method} with {planner_config.num_samples} samples x '
            f'{planner_config.iterations} iterations, horizon {planner_config.horizon} blocks, '
            f'up to {history} history latents, replanning every {self.replan_every} steps of '
            f'{self.control_period} s')

    # ------------------------------------------------------------------ set-up

    def _declare_parameters(self) -> None:
        declare = common.declare
        declare(self, 'model', 'models/reach_small',
                'checkpoint directory, absolute or relative to the package share')
        declare(self, 'device', 'cpu', 'torch device: cpu, cuda or cuda:N')
        declare(self, 'torch_threads', 1, 'torch CPU threads; 0 keeps the torch default')
        declare(self, 'urdf_path', '', 'URDF whose velocity limits bound the actions when '
                'action_bound is empty')
        self._joints_parameter = common.declare_array(
            self, 'joints', Parameter.Type.STRING_ARRAY,
            'joint order of the actions when the checkpoint has no joint_names')
        declare(self, 'control_period', 0.0,
                'time between two control steps (s); 0 takes the checkpoint value')
        declare(self, 'optimizer', 'cem', 'cem or mppi')
        declare(self, 'samples', 300, 'candidate action sequences per iteration')
        declare(self, 'elites', 30, 'CEM elites per iteration')
        declare(self, 'iterations', 30, 'optimiser iterations per plan')
        declare(self, 'horizon', 5, 'plan length in action blocks (frameskip steps each)')
        declare(self, 'initial_std', 1.0, 'CEM initial sampling std (normalised action units)')
        declare(self, 'temperature', 1.0, 'MPPI temperature (cost units)')
        declare(self, 'noise_std', 1.0, 'MPPI sampling std (normalised action units)')
        declare(self, 'warm_start', True, 'start from the unexecuted rest of the previous plan')
        declare(self, 'early_stop_patience', 0,
                'stop after this many iterations without improvement; 0 disables')
        declare(self, 'hold_margin', 0.0,
                'hold still unless the plan costs this fraction less than holding still; '
                '0 disables')
        declare(self, 'final_weight', 1.0, 'weight of the squared final-latent goal distance')
        declare(self, 'step_weight', 0.0,
                'weight of the squared goal distance summed over every predicted step')
        declare(self, 'action_weight', 0.0, 'weight of the squared joint deltas (1/rad^2)')
        declare(self, 'seed', 0, 'seed of the planner random generator')
        self._action_bound_parameter = common.declare_array(
            self, 'action_bound', Parameter.Type.DOUBLE_ARRAY,
            'largest joint delta per control step, one per joint (rad); empty takes URDF '
            'velocity limit x control period')
        declare(self, 'replan_every_steps', 5, 'control steps between two plans')
        declare(self, 'history_latents', 0,
                'observed latents per plan, at most the checkpoint history; 0 takes the '
                'checkpoint history')
        declare(self, 'max_latent_age', 0.5,
                'latents older than this on the node clock are rejected (s)')
        declare(self, 'require_model_info', True,
                'reject latents until the perception model info matches the checkpoint')
        declare(self, 'diagnostics_period', 1.0, 'time between two diagnostics messages (s)')
        topics = {
            'latent_topic': 'lewm/latent',
            'goal_latent_topic': 'lewm/goal_latent',
            'model_info_topic': 'lewm/model_info',
            'joint_states_topic': 'joint_states',
            'plan_topic': 'lewm/plan',
            'surprise_topic': 'lewm/surprise',
            'diagnostics_topic': 'diagnostics',
        }
        for name, default in topics.items():
            declare(self, name, default, 'topic name')

    def _topic(self, name: str) -> str:
        return self.get_parameter(name).value

    def _action_bound(self) -> list[float]:
        bound = [float(v) for v in self._action_bound_parameter]
        if bound:
            if len(bound) != self.config.action_dim or not all(b > 0 for b in bound):
                raise ValueError(f'action_bound {bound} must hold {self.config.action_dim} '
                                 f'positive values (rad per step), one per joint of '
                                 f'{self.joint_names}')
            return bound
        urdf_path = self.get_parameter('urdf_path').value
        if not urdf_path:
            raise ValueError('set action_bound (rad per step, one per joint) or urdf_path so '
                             'that the planner knows how far a joint may move per step')
        from lewm_ros import paths
        from lewm_ros.urdf_limits import load_urdf_limits

        limits = load_urdf_limits(paths.resolve(urdf_path))
        missing = [name for name in self.joint_names if name not in limits]
        if missing:
            raise ValueError(f'{urdf_path} has no joints {missing}; set action_bound instead')
        return [limits[name].velocity * self.control_period for name in self.joint_names]

    def _create_interfaces(self) -> None:
        self.plan_pub = self.create_publisher(JointTrajectory, self._topic('plan_topic'),
                                              common.RELIABLE_QOS)
        self.surprise_pub = self.create_publisher(Float64, self._topic('surprise_topic'),
                                                  common.RELIABLE_QOS)
        self.diagnostics_pub = self.create_publisher(
            DiagnosticArray, self._topic('diagnostics_topic'), common.RELIABLE_QOS)
        self.create_subscription(Image, self._topic('latent_topic'), self._on_latent,
                                 common.RELIABLE_QOS)
        self.create_subscription(Image, self._topic('goal_latent_topic'), self._on_goal,
                                 common.LATCHED_QOS)
        self.create_subscription(String, self._topic('model_info_topic'), self._on_model_info,
                                 common.LATCHED_QOS)
        self.create_subscription(JointState, self._topic('joint_states_topic'),
                                 self._on_joint_states, common.SENSOR_QOS)
        # Diagnostics run on the steady clock, so that they keep coming when /clock stops.
        self.create_timer(float(self.get_parameter('diagnostics_period').value),
                          self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------ inputs

    def _warn(self, message: str) -> None:
        self.get_logger().warning(message, throttle_duration_sec=WARN_THROTTLE_S)

    def _on_model_info(self, message: String) -> None:
        try:
            info = common.parse_model_info(message.data)
        except ValueError as error:
            self.get_logger().error(f'ignored model info: {error}')
            return
        mismatched = self._identity_mismatch(info)
        with self._lock:
            self._model_info = info
        if mismatched:
            self.get_logger().error(
                f'perception runs another model ({mismatched}); its latents are rejected '
                'until both nodes load the same checkpoint')
        else:
            self.get_logger().info('perception model info matches the checkpoint')

    def _identity_mismatch(self, info: dict) -> str:
        """Return a description of the identity fields that differ, or '' when they match."""
        differences = []
        if int(info.get('latent_dim', -1)) != self.config.latent_dim:
            differences.append(f"latent_dim {info.get('latent_dim')} != "
                               f'{self.config.latent_dim}')
        own = dict(self.identity, weights_sha256=self.identity['sha256'])
        for key in IDENTITY_KEYS:
            theirs = info.get(key)
            if theirs and own.get(key) and theirs != own[key]:
                differences.append(f'{key} {str(theirs)[:12]} != {own[key][:12]}')
        return ', '.join(differences)

    def _on_joint_states(self, message: JointState) -> None:
        positions = dict(zip(message.name, message.position))
        with self._lock:
            self._joint_positions.update(positions)

    def _on_goal(self, message: Image) -> None:
        try:
            goal = common.msg_to_latent(message, self.config.latent_dim)
        except ValueError as error:
            self._warn(f'ignored goal latent: {error}')
            return
        with self._lock:
            changed = self._goal is None or not np.array_equal(goal, self._goal)
            self._goal = goal
            if changed:
                # The old plan and its warm start lead to another goal.
                self._last_plan_step = None
                self._reset_planner = True
        if changed:
            self.get_logger().info('new goal latent')

    def _on_latent(self, message: Image) -> None:
        reason = self._check_latent(message)
        if reason:
            return
        latent = common.msg_to_latent(message, self.config.latent_dim)
        stamp = common.stamp_to_seconds(message.header.stamp)
        step = int(round(stamp / self.control_period))
        with self._lock:
            self.counters['latents'] += 1
            self._latest_step = max(self._latest_step, step)
            self.history.add_latent(step, latent)
            self._check_surprise(step, latent)
            if self._goal is None:
                return
            due = self._last_plan_step is None or step - self._last_plan_step >= self.replan_every
            if not due:
                return
            if self._busy or self._job is not None:
                self.counters['overruns'] += 1
                self._warn(f'planning overran: the plan for an earlier frame is still being '
                           f'computed at step {step}; replanning as soon as it ends')
                return
            joints = [self._joint_positions.get(name) for name in self.joint_names]
            if any(q is None for q in joints):
                self._warn(f'no joint states yet for {self.joint_names}; not planning')
                return
            latents, actions = self.history.window(step)
            executed = 0 if self._last_plan_step is None else step - self._last_plan_step
            self._job = {'step': step, 'header': message.header, 'latents': latents,
                         'actions': actions, 'goal': self._goal, 'positions': np.array(joints),
                         'executed': executed, 'reset': self._reset_planner}
            self._reset_planner = False
            self._last_plan_step = step
            self._wake.notify()

    def _check_latent(self, message: Image) -> str:
        """Count and warn about a latent that must not be used; return the reason or ''."""
        if message.width != self.config.latent_dim:
            return self._reject('rejected_size', f'latent has {message.width} values, the '
                                f'checkpoint has latent size {self.config.latent_dim}; check '
                                'that perception and planner load the same model')
        with self._lock:
            info = self._model_info
        if info is None and self.require_model_info:
            # At start-up latents can arrive before perception's latched model info.
            starting = time.monotonic() - self._started < MODEL_INFO_GRACE_S
            return self._reject('rejected_no_model_info', 'no model info received on '
                                f"{self._topic('model_info_topic')} yet; latents are rejected "
                                'until it matches the checkpoint', expected=starting)
        if info is not None:
            mismatched = self._identity_mismatch(info)
            if mismatched:
                return self._reject('rejected_model', f'latent from another model '
                                    f'({mismatched})')
        age = common.now_seconds(self) - common.stamp_to_seconds(message.header.stamp)
        if abs(age) > self.max_latent_age:
            return self._reject('rejected_stale', f'latent stamped {age:.3f} s from the node '
                                f'clock, more than max_latent_age {self.max_latent_age} s '
                                '(check use_sim_time and the clock source)')
        try:
            common.msg_to_latent(message, self.config.latent_dim)
        except ValueError as error:
            return self._reject('rejected_invalid', f'invalid latent: {error}')
        return ''

    def _reject(self, counter: str, message: str, expected: bool = False) -> str:
        """Count a rejected latent and log why, at info level when ``expected``."""
        with self._lock:
            self.counters[counter] += 1
        if expected:
            self.get_logger().info(message, throttle_duration_sec=WARN_THROTTLE_S)
        else:
            self._warn(message)
        return message

    def _check_surprise(self, step: int, latent: np.ndarray) -> None:
        """Publish the surprise when the latent predicted by the last plan arrives (lock held)."""
        if self._expected is None or step < self._expected[0]:
            return
        expected_step, predicted = self._expected
        self._expected = None
        if step != expected_step:
            return
        surprise = float(np.linalg.norm(latent - predicted))
        self.last['surprise'] = surprise
        self.surprise_pub.publish(Float64(data=surprise))

    # ------------------------------------------------------------------ planning

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                self._plan(job)
            except Exception as error:  # noqa: B902 - the worker must survive any one plan
                if not rclpy.ok(context=self.context):
                    return  # shut down while publishing
                with self._lock:
                    self.counters['plan_failures'] += 1
                self.get_logger().error(f'planning for step {job["step"]} failed: {error!r}')
            finally:
                with self._lock:
                    self._busy = False

    def _plan(self, job: dict) -> None:
        torch = self._torch
        device = self.model.device
        if job['reset']:
            self.planner.reset()
        else:
            self.planner.record_executed(min(job['executed'], self.planner.plan_steps))
        latents = torch.as_tensor(job['latents'], device=device, dtype=self.model.dtype)
        actions = None
        if job['actions'] is not None:
            actions = torch.as_tensor(job['actions'], device=device, dtype=self.model.dtype)
        goal = torch.as_tensor(job['goal'], device=device, dtype=self.model.dtype)
        start = time.perf_counter()
        result = self.planner.plan(latents, goal, actions)
        latency = time.perf_counter() - start
        if not result.success:
            with self._lock:
                self.counters['plan_failures'] += 1
            self._warn(f'no plan for step {job["step"]}: {result.reason}')
            return
        deltas = result.actions.detach().to('cpu', torch.float64).numpy()  # (H*F, A)
        targets = job['positions'] + np.cumsum(deltas, axis=0)
        self.plan_pub.publish(self._trajectory(job['header'], targets))
        with self._lock:
            self.history.record_targets(job['step'], targets, from_step=self._latest_step)
            if result.predicted_latents is not None:
                predicted = result.predicted_latents[0].detach().to('cpu').float().numpy()
                self._expected = (job['step'] + self.frameskip, predicted)
            self.counters['plans'] += 1
            self.counters['plans_held'] += bool(result.stats.get('held', False))
            self.last.update(latency_s=latency, cost=result.stats.get('plan_cost', math.nan),
                             predicted_distance=result.stats.get('final_distance', math.nan),
                             latents_in_last_plan=int(latents.shape[0]))

    def _trajectory(self, header, targets: np.ndarray) -> JointTrajectory:
        """Build the plan message: one point per control period after the observation."""
        message = JointTrajectory(joint_names=list(self.joint_names))
        message.header.stamp = header.stamp
        message.header.frame_id = header.frame_id
        for i, positions in enumerate(targets):
            nanoseconds = int(round((i + 1) * self.control_period * 1e9))
            point = JointTrajectoryPoint(positions=[float(q) for q in positions])
            point.time_from_start = DurationMsg(sec=nanoseconds // 1_000_000_000,
                                                nanosec=nanoseconds % 1_000_000_000)
            message.points.append(point)
        return message

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        with self._lock:
            counters = dict(self.counters)
            last = dict(self.last)
            waiting = self._goal is None
        status = DiagnosticStatus(name=f'{self.get_name()}: planning',
                                  hardware_id='lewm_ros')
        rejected = sum(v for k, v in counters.items() if k.startswith('rejected_'))
        if counters['plan_failures']:
            status.level, status.message = DiagnosticStatus.WARN, 'some plans failed'
        elif waiting:
            status.level, status.message = DiagnosticStatus.OK, 'waiting for a goal latent'
        elif counters['overruns'] or rejected:
            status.level = DiagnosticStatus.WARN
            status.message = 'planning overran or latents were rejected'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'planning'
        values = dict(counters, plan_latency_ms=1e3 * last['latency_s'], cost=last['cost'],
                      predicted_distance=last['predicted_distance'],
                      surprise=last['surprise'], latents_in_last_plan=last['latents_in_last_plan'])
        status.values = [KeyValue(key=key, value=f'{value:.6g}' if isinstance(value, float)
                                  else str(value)) for key, value in values.items()]
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(message)

    def destroy_node(self) -> None:
        if not hasattr(self, '_worker'):
            super().destroy_node()  # the constructor failed before the worker started
            return
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> None:
    common.run_node(PlannerNode, args)


if __name__ == '__main__':
    main()
