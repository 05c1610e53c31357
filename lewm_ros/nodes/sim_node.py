"""``sim_node``: the MuJoCo arm behind the interfaces of a camera driver and ros2_control.

It steps :class:`lewm_ros.sim.ArmEnv` once per control period and publishes what a real robot
would: the camera image and camera info, ``joint_states`` and ``/clock`` (simulated time, so
that every node started with ``use_sim_time`` follows the simulation). It takes joint commands
on the same topic and message type as the configured controller. Like a forward position
controller, it keeps following the last command until a new one arrives.

For demos and tests it also renders goal images: set ``goal_positions`` and call
``~/publish_goal``, or publish a ``sensor_msgs/JointState`` on ``sim/goal_joint_positions``.
The goal image is latched on ``lewm/goal_image``, the goal's tool position on
``sim/goal_ee_position`` and the current tool position on ``sim/ee_position``.

Simulated time starts at 0 and never goes back, not even on ``~/reset``.
"""

import math
import threading
import time

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

COMMAND_INTERFACES = ('forward_position', 'joint_trajectory')
CAMERA_FRAME = 'camera_optical_frame'
WORLD_FRAME = 'world'
GOAL_TIMEOUT_S = 5.0

# Sensor streams: reliable, keep the last few (REP-2003: drivers publish reliable, consumers
# pick best effort if they want). Latched topics: reliable + transient local, depth 1.
SENSOR_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)


def to_time_msg(seconds: float) -> Time:
    """Convert seconds to ``builtin_interfaces/Time``."""
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def from_time_msg(stamp) -> float:
    """Convert a ``builtin_interfaces/Time`` or ``Duration`` message to seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def image_message(pixels: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """Pack an RGB ``uint8 (H, W, 3)`` array into an rgb8 ``sensor_msgs/Image``."""
    height, width = pixels.shape[:2]
    message = Image(height=height, width=width, encoding='rgb8', is_bigendian=0,
                    step=3 * width)
    message.header.stamp = stamp
    message.header.frame_id = frame_id
    message.data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return message


def camera_info_message(width: int, height: int, fovy_deg: float, frame_id: str) -> CameraInfo:
    """Build the pinhole ``CameraInfo`` of a distortion-free camera with vertical FOV ``fovy``.

    MuJoCo cameras have square pixels, so the horizontal focal length equals the vertical one.
    The principal point is the image centre in the convention of ``ArmEnv.camera_pixel``.
    """
    focal = 0.5 * height / math.tan(0.5 * math.radians(fovy_deg))
    cx, cy = 0.5 * width, 0.5 * height
    info = CameraInfo(width=width, height=height, distortion_model='plumb_bob')
    info.header.frame_id = frame_id
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class TrajectoryFollower:
    """Joint targets over time from a ``JointTrajectory``, as joint_trajectory_controller does.

    Positions are interpolated linearly between points, which is what the controller's spline
    interpolator does for points with positions only (ros2_controllers, joint_trajectory_controller
    user documentation). Before the first point
    the target moves linearly from the commanded position at the trajectory's start. After the
    last one the target stays at the last point.

    Args:
        start_time: simulated time the trajectory starts (its header stamp, or now for 0).
        start_positions: commanded positions ``(A,)`` at ``start_time``.
        times: ``time_from_start`` of every point ``(P,)`` in seconds, increasing.
        positions: point positions ``(P, A)``; NaN keeps that joint at its start position.
    """

    def __init__(self, start_time: float, start_positions: np.ndarray, times: np.ndarray,
                 positions: np.ndarray) -> None:
        self.times = np.concatenate([[0.0], times]) + start_time
        filled = np.where(np.isnan(positions), start_positions, positions)
        self.positions = np.vstack([start_positions, filled])

    def target(self, now: float) -> np.ndarray:
        """Return the interpolated joint targets ``(A,)`` at simulated time ``now``."""
        return np.array([np.interp(now, self.times, column) for column in self.positions.T])


class SimNode(Node):
    """Simulated arm with a camera; see the module docstring for its topics and services."""

    def __init__(self, **kwargs) -> None:
        super().__init__('sim_node', **kwargs)
        self._declare_parameters()
        from lewm_ros.sim import ArmEnv

        urdf_path = self.get_parameter('urdf_path').value or None
        self.env = ArmEnv(
            image_size=self.get_parameter('image_size').value,
            control_period=self.get_parameter('control_period').value,
            timestep=self.get_parameter('physics_timestep').value,
            urdf_path=urdf_path,
            with_object=self.get_parameter('with_object').value,
            seed=self.get_parameter('seed').value)
        self.joint_names = list(self.get_parameter('joints').value)
        if sorted(self.joint_names) != sorted(self.env.joint_names):
            raise ValueError(f'parameter joints {self.joint_names} does not name the simulated '
                             f'joints {self.env.joint_names}; list each of them once')
        # Index of each simulated joint in the `joints` order used by Float64MultiArray.
        self._order = np.array([self.joint_names.index(n) for n in self.env.joint_names])
        self.initial_positions = self._checked_positions('initial_positions')
        self.command_interface = self.get_parameter('command_interface').value
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(f'invalid command_interface {self.command_interface!r}: use one '
                             f'of {", ".join(COMMAND_INTERFACES)}')
        self.real_time_factor = float(self.get_parameter('real_time_factor').value)
        if not self.real_time_factor >= 0:
            raise ValueError(f'invalid real_time_factor {self.real_time_factor}: use 1.0 for '
                             'wall-clock rate, 0 for as fast as possible')

        self._lock = threading.Lock()
        self.sim_time = 0.0
        self.steps = 0
        self.env.reset(qpos=self.initial_positions)
        self._target = self.env.q_cmd  # held joint targets (A,), simulated joint order
        self._trajectory: TrajectoryFollower | None = None
        self._goal_requests = []

        self._create_interfaces()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='sim_loop', daemon=True)
        self.get_logger().info(
            f'MuJoCo arm ready: joints {self.env.joint_names}, {self.env.image_size} px camera, '
            f'control period {self.env.control_period} s, real time factor '
            f'{self.real_time_factor}, command interface {self.command_interface}')

    # ------------------------------------------------------------------ set-up

    def _declare_parameters(self) -> None:
        self.declare_parameter('urdf_path', '')
        self.declare_parameter('image_size', 64)
        self.declare_parameter('control_period', 0.1)
        self.declare_parameter('physics_timestep', 0.002)
        self.declare_parameter('real_time_factor', 1.0)
        self.declare_parameter('clock_period', 0.01)
        self.declare_parameter('with_object', True)
        self.declare_parameter('seed', 0)
        self.declare_parameter('joints', ['base_yaw', 'shoulder_pitch', 'elbow_pitch'])
        self.declare_parameter('initial_positions', [0.0, 0.3, 0.9])
        self.declare_parameter('goal_positions', [0.0, 0.3, 0.9])
        self.declare_parameter('command_interface', 'forward_position')
        self.declare_parameter('camera_frame_id', CAMERA_FRAME)
        topics = {
            'image_topic': 'camera/image_raw',
            'camera_info_topic': 'camera/camera_info',
            'joint_states_topic': 'joint_states',
            'goal_image_topic': 'lewm/goal_image',
            'goal_joint_positions_topic': 'sim/goal_joint_positions',
            'ee_position_topic': 'sim/ee_position',
            'goal_ee_position_topic': 'sim/goal_ee_position',
            'forward_command_topic': 'forward_position_controller/commands',
            'trajectory_command_topic': 'joint_trajectory_controller/joint_trajectory',
        }
        for name, default in topics.items():
            self.declare_parameter(name, default)

    def _topic(self, name: str) -> str:
        return self.get_parameter(name).value

    def _create_interfaces(self) -> None:
        self.image_pub = self.create_publisher(Image, self._topic('image_topic'), SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, self._topic('camera_info_topic'),
                                              SENSOR_QOS)
        self.joint_pub = self.create_publisher(JointState, self._topic('joint_states_topic'),
                                               SENSOR_QOS)
        # /clock must be absolute: the time source of every node subscribes exactly /clock.
        self.clock_pub = self.create_publisher(Clock, '/clock', SENSOR_QOS)
        self.ee_pub = self.create_publisher(PointStamped, self._topic('ee_position_topic'),
                                            SENSOR_QOS)
        self.goal_image_pub = self.create_publisher(Image, self._topic('goal_image_topic'),
                                                    LATCHED_QOS)
        self.goal_ee_pub = self.create_publisher(
            PointStamped, self._topic('goal_ee_position_topic'), LATCHED_QOS)
        if self.command_interface == 'forward_position':
            self.create_subscription(Float64MultiArray, self._topic('forward_command_topic'),
                                     self._on_forward_command, COMMAND_QOS)
        else:
            self.create_subscription(JointTrajectory, self._topic('trajectory_command_topic'),
                                     self._on_trajectory, COMMAND_QOS)
        self.create_subscription(JointState, self._topic('goal_joint_positions_topic'),
                                 self._on_goal_joint_positions, COMMAND_QOS)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_service(Trigger, '~/publish_goal', self._on_publish_goal)
        fovy = float(self.env.model.cam_fovy[self.env.model.camera('scene_camera').id])
        size = self.env.image_size
        self.camera_info = camera_info_message(size, size, fovy,
                                               self._topic('camera_frame_id'))

    def _checked_positions(self, name: str, values=None) -> np.ndarray:
        """Return the positions of parameter ``name`` (``joints`` order) in simulated order."""
        if values is None:
            values = self.get_parameter(name).value
        q = np.asarray(values, dtype=np.float64).reshape(-1)
        if q.shape != (len(self.joint_names),):
            raise ValueError(
                f'{name} has {q.size} values; give one per joint of {self.joint_names}')
        try:
            return self.env.check_qpos(q[self._order])
        except ValueError as error:
            raise ValueError(f'{name}: {error}') from error

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the simulation thread; it releases the renderer it created."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as error:  # noqa: B902 - logged, then the thread ends
            if rclpy.ok(context=self.context):
                self.get_logger().error(f'simulation stopped: {error!r}')
                raise
            # Ctrl-C shut the context down while a message was being published.
        finally:
            # The EGL context of the renderer belongs to this thread.
            self.env.close()

    def _loop(self) -> None:
        period = self.env.control_period
        clock_period = float(self.get_parameter('clock_period').value)
        wall_start = time.monotonic()
        sim_start = self.sim_time
        rate = self.real_time_factor
        self._publish_state()
        while not self._stop.is_set() and rclpy.ok(context=self.context):
            if rate != self.real_time_factor:
                # Changed at run time: count wall-clock time at the new rate from here on.
                rate = self.real_time_factor
                wall_start, sim_start = time.monotonic(), self.sim_time
            if rate > 0 and clock_period > 0:
                # Between two steps, keep /clock moving so that timers of nodes on sim time
                # fire at their own rate, not only once per control period.
                ticks = max(1, int(round(period / clock_period)))
                for tick in range(1, ticks):
                    now = self.sim_time + tick * period / ticks
                    self._sleep_until(wall_start + (now - sim_start) / rate)
                    self.clock_pub.publish(Clock(clock=to_time_msg(now)))
            if rate > 0:
                self._sleep_until(wall_start + (self.sim_time + period - sim_start) / rate)
                behind = time.monotonic() - wall_start - (self.sim_time - sim_start) / rate
                if behind > 2 * period / rate:
                    # Too slow to keep the rate: go on from now instead of catching up in a burst.
                    wall_start = time.monotonic()
                    sim_start = self.sim_time + period
            with self._lock:
                self._step()
            self._publish_state()
            self._publish_pending_goals()

    def _sleep_until(self, wall_time: float) -> None:
        delay = wall_time - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _step(self) -> None:
        if self._trajectory is not None:
            self._target = self._trajectory.target(self.sim_time + self.env.control_period)
        self.env.step(self._target - self.env.q_cmd)
        self.sim_time += self.env.control_period
        self.steps += 1

    def _publish_state(self) -> None:
        with self._lock:
            stamp = to_time_msg(self.sim_time)
            pixels = self.env.render()
            qpos, qvel = self.env.qpos, self.env.qvel
            ee = self.env.ee_position()
        self.clock_pub.publish(Clock(clock=stamp))
        joints = JointState(name=list(self.env.joint_names), position=qpos.tolist(),
                            velocity=qvel.tolist())
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        self.image_pub.publish(image_message(pixels, stamp, self.camera_info.header.frame_id))
        self.camera_info.header.stamp = stamp
        self.info_pub.publish(self.camera_info)
        self.ee_pub.publish(self._point(ee, stamp))

    @staticmethod
    def _point(position: np.ndarray, stamp: Time) -> PointStamped:
        point = PointStamped()
        point.header.stamp = stamp
        point.header.frame_id = WORLD_FRAME
        point.point.x, point.point.y, point.point.z = (float(v) for v in position)
        return point

    # ------------------------------------------------------------------ commands

    def _on_forward_command(self, message: Float64MultiArray) -> None:
        values = np.asarray(message.data, dtype=np.float64)
        if values.shape != (len(self.joint_names),) or not np.all(np.isfinite(values)):
            self.get_logger().warning(
                f'ignored command {values.tolist()}: expected {len(self.joint_names)} finite '
                f'positions in the order {self.joint_names}', throttle_duration_sec=2.0)
            return
        with self._lock:
            self._trajectory = None
            self._target = self._clipped(values[self._order])

    def _on_trajectory(self, message: JointTrajectory) -> None:
        unknown = [name for name in message.joint_names if name not in self.env.joint_names]
        if unknown or not message.points:
            self.get_logger().warning(
                f'ignored trajectory: unknown joints {unknown}' if unknown
                else 'ignored trajectory without points', throttle_duration_sec=2.0)
            return
        columns = [message.joint_names.index(n) if n in message.joint_names else -1
                   for n in self.env.joint_names]
        times = np.array([from_time_msg(p.time_from_start) for p in message.points])
        positions = np.full((len(message.points), self.env.num_joints), np.nan)
        for row, point in enumerate(message.points):
            if len(point.positions) != len(message.joint_names):
                self.get_logger().warning(
                    f'ignored trajectory: point {row} has {len(point.positions)} positions for '
                    f'{len(message.joint_names)} joints', throttle_duration_sec=2.0)
                return
            for joint, column in enumerate(columns):
                if column >= 0:
                    positions[row, joint] = point.positions[column]
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            self.get_logger().warning(
                f'ignored trajectory: time_from_start must increase, got {times.tolist()}',
                throttle_duration_sec=2.0)
            return
        finite = positions[~np.isnan(positions)]
        if not np.all(np.isfinite(finite)):
            self.get_logger().warning('ignored trajectory with infinite positions',
                                      throttle_duration_sec=2.0)
            return
        with self._lock:
            start = from_time_msg(message.header.stamp)
            if start == 0.0:
                start = self.sim_time
            low, high = self.env.joint_limits[:, 0], self.env.joint_limits[:, 1]
            positions = np.where(np.isnan(positions), np.nan, np.clip(positions, low, high))
            self._trajectory = TrajectoryFollower(start, self.env.q_cmd, times, positions)

    def _clipped(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.env.joint_limits[:, 0], self.env.joint_limits[:, 1])

    # ------------------------------------------------------------------ services and goals

    def _on_reset(self, request, response):
        with self._lock:
            self.env.reset(qpos=self.initial_positions)
            self._target = self.env.q_cmd
            self._trajectory = None
        response.success = True
        response.message = f'reset to {self.initial_positions.tolist()} rad'
        self.get_logger().info(response.message)
        return response

    def _on_publish_goal(self, request, response):
        try:
            goal = self._checked_positions('goal_positions')
        except (ValueError, TypeError) as error:
            response.success = False
            response.message = f'no valid goal: {error}; set the parameter goal_positions'
            self.get_logger().error(response.message)
            return response
        if not self.publish_goal(goal, timeout=GOAL_TIMEOUT_S):
            response.success = False
            response.message = f'the simulation thread did not render the goal within ' \
                f'{GOAL_TIMEOUT_S} s'
            return response
        response.success = True
        response.message = f'goal image published for {goal.tolist()} rad'
        return response

    def _on_goal_joint_positions(self, message: JointState) -> None:
        positions = dict(zip(message.name, message.position))
        missing = [name for name in self.env.joint_names if name not in positions]
        if missing or len(message.name) != len(message.position):
            self.get_logger().error(
                f'ignored goal joint positions: missing joints {missing}; give a position '
                'for every simulated joint')
            return
        try:
            goal = self.env.check_qpos([positions[name] for name in self.env.joint_names])
        except ValueError as error:
            self.get_logger().error(f'ignored goal joint positions: {error}')
            return
        self.publish_goal(goal)

    def publish_goal(self, goal: np.ndarray, timeout: float | None = None) -> bool:
        """Queue rendering the arm at ``goal`` ``(A,)`` (simulated order) for the sim thread.

        The EGL context belongs to the thread that created the renderer, so every render runs
        on the simulation thread. Returns True when the goal was published within ``timeout``
        seconds (None returns at once, with True).
        """
        done = threading.Event()
        with self._lock:
            self._goal_requests.append((goal, done))
        return True if timeout is None else done.wait(timeout)

    def _publish_pending_goals(self) -> None:
        with self._lock:
            requests, self._goal_requests = self._goal_requests, []
        for goal, done in requests:
            with self._lock:
                pixels = self.env.render_goal(goal)
                ee = self.env.ee_position_at(goal)
                stamp = to_time_msg(self.sim_time)
            self.goal_image_pub.publish(image_message(pixels, stamp,
                                                      self.camera_info.header.frame_id))
            self.goal_ee_pub.publish(self._point(ee, stamp))
            done.set()
            self.get_logger().info(
                f'goal {goal.tolist()} rad, tool at {np.round(ee, 3).tolist()} m')

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == 'goal_positions':
                try:
                    self._checked_positions('goal_positions', parameter.value)
                except (ValueError, TypeError) as error:
                    return SetParametersResult(successful=False, reason=str(error))
            elif parameter.name == 'real_time_factor':
                if not parameter.value >= 0:
                    return SetParametersResult(successful=False,
                                               reason='real_time_factor must be >= 0')
                self.real_time_factor = float(parameter.value)
        return SetParametersResult(successful=True)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = SimNode()
        node.start()
        # The simulation has its own thread, so callbacks need only one. rclpy's
        # MultiThreadedExecutor kept a core busy in its spin loop here (seen with py-spy), which
        # starved the simulation thread of the GIL: real time factor 0.2 to 0.5.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
