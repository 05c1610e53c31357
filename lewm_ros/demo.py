"""``lewm demo``: run the whole stack in simulation and report whether the arm reaches each goal.

The demo starts sim_node, perception_node, planner_node and actuator_node as separate processes
(:class:`lewm_ros.bringup.Stack`, the same nodes and parameter file as ``ros2 launch``), waits
until images, latents and plans flow, then sends the goal configurations of :data:`GOALS` one
after the other on ``sim/goal_joint_positions``. The simulator renders each goal image, the
perception node encodes it and the planner drives the arm towards it. A goal counts as reached
when the tool centre stays within ``--success-distance`` of the goal's tool centre for
``--hold`` seconds of simulated time; a goal not reached within ``--timeout`` is reported as
missed and the demo moves on.

Results go to ``--output`` (default ``runs/demo-<UTC timestamp>``): ``report.json``, a table on
stdout, ``demo.gif`` (camera view beside the goal image) and ``distance.png`` (tool-to-goal
distance over time).
"""

from dataclasses import asdict, dataclass, field
import datetime
import json
import logging
import os
from pathlib import Path
import threading
import time

log = logging.getLogger('lewm.demo')

# Goal joint positions (rad) of base_yaw, shoulder_pitch, elbow_pitch, in the order sent. Each
# keeps the arm clear of the table and the cube and in view of the camera. The arm starts at the
# sim_node initial_positions [0, 0.3, 0.9]. From there, the tool centre moves 9 to 13 cm from
# one goal to the next over the first five goals (the default), and 13 to 29 cm after them.
GOALS = (
    (0.3, -0.1, 1.3),
    (0.0, 0.5, 0.5),
    (-0.3, 0.1, 1.1),
    (-0.7, 0.0, 1.2),
    (-0.5, 0.4, 0.8),
    (0.6, 0.2, 1.0),
    (0.2, 0.6, 0.4),
    (0.8, 0.3, 0.7),
)
JOINT_NAMES = ('base_yaw', 'shoulder_pitch', 'elbow_pitch')
STARTUP_TIMEOUT_S = 120.0
GIF_FRAME_EVERY = 2  # keep one camera frame in this many for the GIF
GIF_SCALE = 3  # nearest-neighbour upscaling of the 64 px images in the GIF


class StackError(RuntimeError):
    """The stack could not start or a node died."""


@dataclass
class GoalResult:
    """Outcome of one goal; distances in metres, times in seconds of simulated time."""

    index: int
    joint_positions: list
    goal_ee_position: list
    reached: bool
    time_to_reach_s: float | None
    final_error_m: float
    min_error_m: float
    start_error_m: float
    trace: list = field(default_factory=list, repr=False)  # [(sim time, distance)]


def _stamp(stamp) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


class StackMonitor:
    """An rclpy node beside the stack that watches it and sends goals.

    It records the tool and goal positions from sim_node, camera and goal images, plans,
    commands and diagnostics, each with its wall-clock receipt time, and spins on its own
    thread. Used by ``lewm demo``, ``lewm bench stack`` and the end-to-end tests.

    Args:
        namespace: the stack's ROS namespace ('' for none).
        keep_images: store camera and goal images (for the GIF).
    """

    def __init__(self, namespace: str = '', keep_images: bool = False) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data

        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray, String
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import JointTrajectory

        from lewm_ros.nodes import common

        self._JointState = JointState
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('lewm_stack_monitor', namespace=namespace or '/',
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.keep_images = keep_images
        self.ee = None  # (sim time, xyz)
        self.goal_ee = None
        self.ee_trace = []  # [(sim time, xyz)]
        self.images = []  # [(sim time, rgb)]
        self.image_times = {}  # image stamp -> wall receipt time
        self.goal_images = []  # [(sim time, rgb)], one per goal
        self.plans = []  # [(wall receipt time, plan stamp)]
        self.commands = []  # [wall receipt time]
        self.latents = 0
        self.model_info = None
        self.diagnostics = {}  # status name -> {key: value}
        self.sim_time = 0.0
        self.joint_trace = []  # [(sim time, positions in JOINT_NAMES order)]

        node = self.node
        node.create_subscription(PointStamped, 'sim/ee_position', self._on_ee,
                                 qos_profile_sensor_data)
        node.create_subscription(PointStamped, 'sim/goal_ee_position', self._on_goal_ee,
                                 common.LATCHED_QOS)
        node.create_subscription(JointState, 'joint_states', self._on_joint_states,
                                 qos_profile_sensor_data)
        node.create_subscription(Image, 'camera/image_raw', self._on_image,
                                 qos_profile_sensor_data)
        node.create_subscription(Image, 'lewm/goal_image', self._on_goal_image,
                                 common.LATCHED_QOS)
        node.create_subscription(Image, 'lewm/latent', self._on_latent, common.RELIABLE_QOS)
        node.create_subscription(String, 'lewm/model_info', self._on_model_info,
                                 common.LATCHED_QOS)
        node.create_subscription(JointTrajectory, 'lewm/plan', self._on_plan,
                                 common.RELIABLE_QOS)
        node.create_subscription(Float64MultiArray, 'forward_position_controller/commands',
                                 self._on_command, common.RELIABLE_QOS)
        node.create_subscription(JointTrajectory, 'joint_trajectory_controller/joint_trajectory',
                                 self._on_command, common.RELIABLE_QOS)
        node.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics,
                                 common.RELIABLE_QOS)
        self.goal_pub = node.create_publisher(JointState, 'sim/goal_joint_positions',
                                              common.RELIABLE_QOS)
        self.reset_client = node.create_client(Trigger, 'sim_node/reset')
        self.enable_client = node.create_client(SetBool, 'actuator_node/enable')
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, name='monitor', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._spinning = False
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ callbacks

    def _on_ee(self, message) -> None:
        t = _stamp(message.header.stamp)
        xyz = (message.point.x, message.point.y, message.point.z)
        with self.lock:
            self.ee = (t, xyz)
            self.ee_trace.append((t, xyz))
            self.sim_time = max(self.sim_time, t)

    def _on_joint_states(self, message) -> None:
        positions = dict(zip(message.name, message.position))
        if all(name in positions for name in JOINT_NAMES):
            with self.lock:
                self.joint_trace.append((_stamp(message.header.stamp),
                                         [positions[name] for name in JOINT_NAMES]))
                if len(self.joint_trace) > 20000:
                    del self.joint_trace[:10000]

    def _on_goal_ee(self, message) -> None:
        with self.lock:
            self.goal_ee = (_stamp(message.header.stamp),
                            (message.point.x, message.point.y, message.point.z))

    def _on_image(self, message) -> None:
        t = _stamp(message.header.stamp)
        with self.lock:
            self.image_times[t] = time.monotonic()
            if len(self.image_times) > 2000:
                for key in sorted(self.image_times)[:1000]:
                    del self.image_times[key]
        if self.keep_images:
            rgb = _to_rgb(message)
            with self.lock:
                self.images.append((t, rgb))

    def _on_goal_image(self, message) -> None:
        rgb = _to_rgb(message)
        with self.lock:
            self.goal_images.append((_stamp(message.header.stamp), rgb))

    def _on_latent(self, message) -> None:
        with self.lock:
            self.latents += 1

    def _on_model_info(self, message) -> None:
        with self.lock:
            self.model_info = json.loads(message.data)

    def _on_plan(self, message) -> None:
        with self.lock:
            self.plans.append((time.monotonic(), _stamp(message.header.stamp)))

    def _on_command(self, message) -> None:
        with self.lock:
            self.commands.append(time.monotonic())

    def _on_diagnostics(self, message) -> None:
        with self.lock:
            for status in message.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    # ------------------------------------------------------------------ queries and goals

    def snapshot(self) -> dict:
        with self.lock:
            return {'ee': self.ee, 'goal_ee': self.goal_ee, 'latents': self.latents,
                    'plans': len(self.plans), 'commands': len(self.commands),
                    'model_info': self.model_info, 'images': len(self.image_times),
                    'sim_time': self.sim_time}

    def send_goal(self, positions, joint_names=JOINT_NAMES) -> None:
        message = self._JointState(name=list(joint_names), position=[float(q) for q in positions])
        self.goal_pub.publish(message)

    def reset_arm(self, timeout: float = 10.0) -> None:
        """Reset the simulated arm to sim_node's ``initial_positions``, with the actuator off.

        The actuator limits each command's change from the previous command, so it is disabled
        around the reset. Its next command after the enable starts from the new measured
        position.

        Raises:
            StackError: when a service is missing, fails or does not respond within ``timeout``.
        """
        from std_srvs.srv import SetBool, Trigger

        self._call(self.enable_client, SetBool.Request(data=False), timeout)
        self._call(self.reset_client, Trigger.Request(), timeout)
        time.sleep(0.3)  # let joint states of the reset arm reach the actuator
        self._call(self.enable_client, SetBool.Request(data=True), timeout)

    def _call(self, client, request, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            raise StackError(f'{client.srv_name} is not available after {timeout:.0f} s')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise StackError(f'{client.srv_name} did not respond within {timeout:.0f} s')
            time.sleep(0.05)
        if not future.result().success:
            raise StackError(f'{client.srv_name} failed: {future.result().message}')
        return future.result()

    def distance(self) -> float | None:
        """Return the current tool-to-goal distance in metres, or None before both arrive."""
        with self.lock:
            if self.ee is None or self.goal_ee is None:
                return None
            return _norm(self.ee[1], self.goal_ee[1])


def _norm(a, b) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def _to_rgb(message):
    import numpy as np

    pixels = np.frombuffer(bytes(message.data), np.uint8)
    return pixels.reshape(message.height, message.step)[:, :3 * message.width].reshape(
        message.height, message.width, 3).copy()


# ---------------------------------------------------------------------- running the stack

def check_stack(stack) -> None:
    """Raise StackError when any node of ``stack`` has exited."""
    exited = stack.exited()
    if exited:
        names = ', '.join(f'{name} (exit code {code})' for name, code in exited.items())
        raise StackError(f'node died: {names}; see its log above')


def wait_until_ready(stack, monitor: StackMonitor, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Wait until images, latents, model info and the tool position flow; return the seconds.

    Raises:
        StackError: when a node dies or the stack is not ready within ``timeout`` seconds.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        check_stack(stack)
        state = monitor.snapshot()
        if state['ee'] and state['latents'] > 0 and state['model_info']:
            return time.monotonic() - start
        time.sleep(0.2)
    state = monitor.snapshot()
    raise StackError(f'the stack was not ready after {timeout:.0f} s: {state["images"]} images, '
                     f'{state["latents"]} latents, model info '
                     f'{"received" if state["model_info"] else "missing"}')


def run_goal(stack, monitor: StackMonitor, index: int, goal, success_distance: float,
             hold: float, timeout: float) -> GoalResult:
    """Send one goal and wait until it is reached and held, or until ``timeout`` (sim s)."""
    with monitor.lock:
        previous_goal = monitor.goal_ee
    monitor.send_goal(goal)
    deadline = time.monotonic() + 30.0
    while True:
        check_stack(stack)
        with monitor.lock:
            goal_ee = monitor.goal_ee
        if goal_ee is not None and goal_ee is not previous_goal:
            break
        if time.monotonic() > deadline:
            raise StackError(f'sim_node did not confirm goal {index} ({list(goal)}) within 30 s')
        time.sleep(0.05)
    start_time = monitor.snapshot()['sim_time']
    trace = []
    inside_since = None
    reached_at = None
    wall_limit = time.monotonic() + 10 * timeout + 30
    while True:
        check_stack(stack)
        with monitor.lock:
            ee_time, ee = monitor.ee
        error = _norm(ee, goal_ee[1])
        if not trace or ee_time > trace[-1][0]:
            trace.append((ee_time, error))
        if error <= success_distance:
            if inside_since is None:
                inside_since = ee_time
            if ee_time - inside_since >= hold:
                reached_at = inside_since
                break
        else:
            inside_since = None
        if ee_time - start_time >= timeout or time.monotonic() > wall_limit:
            break
        time.sleep(0.02)
    errors = [e for _, e in trace]
    return GoalResult(
        index=index, joint_positions=[float(q) for q in goal],
        goal_ee_position=[round(v, 4) for v in goal_ee[1]], reached=reached_at is not None,
        time_to_reach_s=None if reached_at is None else round(reached_at - start_time, 2),
        final_error_m=round(errors[-1], 4), min_error_m=round(min(errors), 4),
        start_error_m=round(errors[0], 4),
        trace=[(round(t - start_time, 3), round(e, 4)) for t, e in trace])


def run_goals(stack, monitor: StackMonitor, goals, success_distance: float, hold: float,
              timeout: float):
    """Yield the :class:`GoalResult` of each goal, sent one after the other.

    Each goal starts where the previous one left the arm. After a missed goal the arm is reset
    to sim_node's ``initial_positions`` first, so that one miss far from the goals does not make
    the next goal harder.
    """
    for index, goal in enumerate(goals, start=1):
        result = run_goal(stack, monitor, index, goal, success_distance, hold, timeout)
        yield result
        if not result.reached and index < len(goals):
            monitor.reset_arm()


# ---------------------------------------------------------------------- outputs

def print_table(results: list[GoalResult], success_distance: float, hold: float) -> None:
    print(f'{"goal":>4}  {"joint positions (rad)":<24} {"reached":<8} {"time (s)":>8} '
          f'{"final error (m)":>15} {"start error (m)":>15}')
    for result in results:
        positions = '[' + ', '.join(f'{q:+.2f}' for q in result.joint_positions) + ']'
        took = '-' if result.time_to_reach_s is None else f'{result.time_to_reach_s:.1f}'
        print(f'{result.index:>4}  {positions:<24} {"yes" if result.reached else "NO":<8} '
              f'{took:>8} {result.final_error_m:>15.3f} {result.start_error_m:>15.3f}')
    reached = sum(r.reached for r in results)
    print(f'reached {reached} of {len(results)} goals (reached: the tool stayed within '
          f'{success_distance * 100:.0f} cm for {hold:g} s; time is from the goal to the start '
          f'of that stay)')


def write_plot(results: list[GoalResult], success_distance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    offset = 0.0
    for result in results:
        times = [offset + t for t, _ in result.trace]
        distances = [100 * e for _, e in result.trace]
        label = f'goal {result.index} ({"reached" if result.reached else "missed"})'
        axes.plot(times, distances, label=label)
        offset = times[-1] if times else offset
        axes.axvline(offset, color='0.85', linewidth=0.8)
    axes.axhline(100 * success_distance, color='k', linestyle='--', linewidth=1,
                 label='success distance')
    axes.set_ylim(bottom=0)
    axes.set_xlabel('simulated time (s)')
    axes.set_ylabel('tool to goal distance (cm)')
    axes.set_title('lewm demo: distance to goal')
    axes.legend(fontsize=8, ncol=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_gif(frames: list, goals: list, path: Path, period: float) -> int:
    """Write camera frames beside the goal image active at each frame; return the frame count.

    Each frame has a header that names the two views: the camera with the simulated time on the
    left, the goal with its number on the right.

    Args:
        frames: [(sim time, rgb (H, W, 3))] camera images.
        goals: [(sim time, rgb (H, W, 3))] goal images, in order of arrival.
        period: simulated time between two kept frames (s), the GIF frame duration.
    """
    import cv2
    import imageio.v2 as imageio
    import numpy as np

    if not frames:
        return 0
    height, width = frames[0][1].shape[:2]
    size = (height * GIF_SCALE, width * GIF_SCALE)
    header, gap = 20, 4
    blank = np.zeros_like(frames[0][1])

    def scaled(image):
        # Goal images may come at another size than the camera's, so both are resized to one.
        return cv2.resize(image, size[::-1], interpolation=cv2.INTER_NEAREST)

    images = []
    for t, rgb in frames[::GIF_FRAME_EVERY]:
        goal, number = blank, 0
        for goal_time, goal_rgb in goals:
            if goal_time <= t + 1e-6:
                goal, number = goal_rgb, number + 1
        canvas = np.full((header + size[0], 2 * size[1] + gap, 3), 255, np.uint8)
        canvas[header:, :size[1]] = scaled(rgb)
        canvas[header:, size[1] + gap:] = scaled(goal)
        labels = ((f'camera {t:.1f} s', 4),
                  (f'goal {number}' if number else 'no goal yet', size[1] + gap + 4))
        for text, x in labels:
            cv2.putText(canvas, text, (x, header - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
        images.append(canvas)
    imageio.mimsave(path, images, duration=1000 * period, loop=0)
    return len(images)


# ---------------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    parser.add_argument('--goals', type=int, default=5,
                        help=f'number of goals from the fixed list (1 to {len(GOALS)})')
    parser.add_argument('--model', default='models/reach_small',
                        help='checkpoint directory, absolute or relative to the package share')
    parser.add_argument('--output', default=None,
                        help='directory for report.json, demo.gif and distance.png '
                             '(default: runs/demo-<UTC timestamp>)')
    parser.add_argument('--success-distance', type=float, default=0.05,
                        help='tool-to-goal distance that counts as reached (m)')
    parser.add_argument('--hold', type=float, default=1.0,
                        help='time the tool must stay within the success distance '
                             '(simulated s)')
    parser.add_argument('--timeout', type=float, default=30.0,
                        help='time allowed per goal before it counts as missed (simulated s)')
    parser.add_argument('--params-file', default=None,
                        help='parameter YAML (default: config/sim.yaml)')
    parser.add_argument('--real-time-factor', type=float, default=None,
                        help='simulated seconds per wall-clock second (default: the parameter '
                             'file, 1.0); below 1 gives a slow CPU more time per control step')
    parser.add_argument('--device', default='cpu', help='torch device: cpu, cuda or cuda:N')
    parser.add_argument('--command-interface', default='forward_position',
                        choices=('forward_position', 'joint_trajectory'),
                        help='ros2_control command path between actuator and simulator')
    parser.add_argument('--log-level', default='warn',
                        help='ROS log level of the nodes (info shows every start-up step)')
    parser.add_argument('--no-gif', action='store_true', help='skip the GIF')


def write_params(source: str | None, destination: Path,
                 real_time_factor: float | None = None) -> Path:
    """Copy the parameter file to ``destination`` with the demo's overrides; return the copy.

    The copy stays in the output directory as the record of the parameters the run used.
    """
    import yaml

    from lewm_ros import paths
    from lewm_ros.stack import DEFAULT_PARAMS_FILE, node_parameters

    path = paths.resolve(source) if source else paths.share_path(DEFAULT_PARAMS_FILE)
    params = yaml.safe_load(path.read_text())
    if real_time_factor is not None:
        if not real_time_factor > 0:
            raise StackError(f'invalid --real-time-factor {real_time_factor}: use a value > 0')
        node_parameters(params, 'sim_node')['real_time_factor'] = float(real_time_factor)
    destination.write_text(f'# Parameters of this demo run, from {path}\n'
                           + yaml.safe_dump(params, sort_keys=False))
    return destination


def check_model(model: str) -> Path:
    """Return the checkpoint directory of ``model``; raise StackError naming the fix."""
    from lewm_ros import paths
    from lewm_ros.model import CheckpointError, read_checkpoint_config

    try:
        directory = paths.resolve(model)
        read_checkpoint_config(directory)
    except (FileNotFoundError, CheckpointError) as error:
        raise StackError(f'model {model!r} is not usable: {error}. Train one with `lewm train` '
                         'or pass --model DIR') from error
    return directory


def stop_on_sigterm(function, *args):
    """Call ``function(*args)`` with SIGTERM turned into KeyboardInterrupt, and return its result.

    The stack's nodes run in sessions of their own, so a SIGTERM to this process alone would
    leave them running. As a KeyboardInterrupt it reaches the code that stops them.
    """
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return function(*args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args) -> int:
    return stop_on_sigterm(run_demo, args)


def run_demo(args) -> int:
    """Run the demo that ``args`` describes; see the module docstring."""
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if not 1 <= args.goals <= len(GOALS):
        log.error('invalid --goals %d: choose 1 to %d', args.goals, len(GOALS))
        return 2
    try:
        model = check_model(args.model)
    except StackError as error:
        log.error('%s', error)
        return 1
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
    output = Path(args.output or f'runs/demo-{stamp}')
    output.mkdir(parents=True, exist_ok=True)
    try:
        params_file = write_params(args.params_file, output / 'params.yaml',
                                   args.real_time_factor)
    except (StackError, FileNotFoundError) as error:
        log.error('%s', error)
        return 1

    from lewm_ros.bringup import Stack

    values = {'model': str(model), 'device': args.device,
              'command_interface': args.command_interface, 'use_sim_time': 'true'}
    stack = Stack(sim=True, params_file=params_file, values=values, log_level=args.log_level)
    monitor = None
    results, frames, goal_images = [], [], []
    status = 0
    try:
        log.info('starting the stack with %s', model)
        stack.start()
        monitor = StackMonitor(keep_images=not args.no_gif)
        took = wait_until_ready(stack, monitor)
        log.info('stack ready after %.1f s; sending %d goals', took, args.goals)
        for result in run_goals(stack, monitor, GOALS[:args.goals], args.success_distance,
                                args.hold, args.timeout):
            log.info('goal %d %s: final error %.3f m', result.index,
                     'reached' if result.reached else 'missed', result.final_error_m)
            results.append(result)
    except StackError as error:
        log.error('%s', error)
        return 1
    except KeyboardInterrupt:
        log.warning('interrupted; reporting the goals finished so far')
        status = 130
    finally:
        if monitor is not None:
            with monitor.lock:
                frames = list(monitor.images)
                goal_images = list(monitor.goal_images)
            monitor.close()
        stack.stop()

    print_table(results, args.success_distance, args.hold)
    report = {
        'model': str(model), 'goals': len(results),
        'reached': sum(r.reached for r in results),
        'success_distance_m': args.success_distance, 'hold_s': args.hold,
        'timeout_s': args.timeout, 'command_interface': args.command_interface,
        'results': [asdict(r) for r in results],
    }
    (output / 'report.json').write_text(json.dumps(report, indent=2) + '\n')
    if results:
        write_plot(results, args.success_distance, output / 'distance.png')
    if not args.no_gif:
        count = write_gif(frames, goal_images, output / 'demo.gif', 0.1 * GIF_FRAME_EVERY)
        log.info('wrote %d GIF frames', count)
    print(f'report, plot and video in {output}')
    return status
