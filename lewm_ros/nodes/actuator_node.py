"""Actuator node: stream safety-filtered joint commands to ros2_control at the control rate.

The node follows the newest valid plan (``trajectory_msgs/JointTrajectory`` of absolute joint
targets) through :class:`lewm_ros.safety.SafetyFilter`, which enforces the joint limits of the
robot description, the per-command step limit, the plan and joint-state timeouts, the e-stop
latch and the surprise halt. Topics, parameters and services are listed in ``docs/nodes.md``.
"""

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros import paths, safety
from lewm_ros.nodes import common
from lewm_ros.safety import SafetyConfig, SafetyFilter
from lewm_ros.urdf_limits import parse_urdf_limits

COMMAND_INTERFACES = ('joint_trajectory', 'forward_position')

# Diagnostic level of each tick reason: following or idle is OK, a hold on a timeout is a
# warning, a latched halt is an error.
_LEVELS = {
    safety.FOLLOW: DiagnosticStatus.OK,
    safety.HOLD_NO_PLAN: DiagnosticStatus.OK,
    safety.NOT_ENABLED: DiagnosticStatus.OK,
    safety.HOLD_PLAN_STALE: DiagnosticStatus.WARN,
    safety.HOLD_STATE_STALE: DiagnosticStatus.WARN,
    safety.NO_STATE: DiagnosticStatus.WARN,
    safety.HOLD_ESTOP: DiagnosticStatus.ERROR,
    safety.HOLD_SURPRISE: DiagnosticStatus.ERROR,
}


class ActuatorNode(Node):
    """Turn plans into ros2_control commands that never leave the joint limits."""

    def __init__(self):
        super().__init__('actuator_node')
        self._declare_parameters()
        self._filter = None
        self._estop_requested = False

        self._command_pub = self._make_command_publisher()
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, self._topic('diagnostics_topic'), common.RELIABLE_QOS)
        self.create_subscription(JointTrajectory, self._topic('plan_topic'), self._on_plan,
                                 common.RELIABLE_QOS)
        # Joint states are sensor data: best effort accepts reliable and best-effort publishers.
        self.create_subscription(JointState, self._topic('joint_states_topic'),
                                 self._on_joint_state, common.SENSOR_QOS)
        self.create_subscription(Float64, self._topic('surprise_topic'), self._on_surprise,
                                 common.RELIABLE_QOS)
        self.create_service(Trigger, '~/estop', self._on_estop)
        self.create_service(SetBool, '~/enable', self._on_enable)

        self._load_robot_description()
        self.create_timer(1.0 / self._rate, self._on_tick)
        self.create_timer(self._diagnostics_period, self._publish_diagnostics)
        start = 'follows plans at once (auto_enable)' if self._auto_enable else \
            'waits for ~/enable'
        self.get_logger().info(f'actuator started: {self._interface} commands at '
                               f'{self._rate:g} Hz on {self._command_topic}; {start}')

    # ----------------------------------------------------------------------------------------
    # Set-up

    def _declare_parameters(self) -> None:
        declare = common.declare
        self._interface = declare(
            self, 'command_interface', 'joint_trajectory',
            'joint_trajectory (trajectory_msgs/JointTrajectory) or forward_position '
            '(std_msgs/Float64MultiArray in the order of joints)')
        if self._interface not in COMMAND_INTERFACES:
            raise ValueError(f'command_interface {self._interface!r} is invalid; use one of '
                             f'{COMMAND_INTERFACES}')

        self._joints = common.declare_array(
            self, 'joints', Parameter.Type.STRING_ARRAY,
            'commanded joints in the controller order; empty takes every movable joint of the '
            'robot description')
        self._rate = float(declare(self, 'control_rate_hz', 10.0, 'command rate (Hz)'))
        if not self._rate > 0:
            raise ValueError(f'control_rate_hz must be positive, got {self._rate}')
        self._max_step = declare(self, 'max_step', 0.05,
                                 'largest change of one joint between two commands (rad)')
        self._plan_timeout = declare(self, 'plan_timeout', 0.5,
                                     'a plan older than this is not followed (s)')
        self._state_timeout = declare(self, 'state_timeout', 0.5,
                                      'joint states older than this stop plan following (s)')
        threshold = declare(self, 'surprise_threshold', 0.0,
                            'surprise above this halts the arm until re-enabled; 0 disables')
        self._surprise_threshold = threshold if threshold > 0 else math.inf
        self._auto_enable = declare(self, 'auto_enable', False,
                                    'follow plans from start-up without an enable call')
        lookahead = declare(self, 'lookahead', 0.0,
                            'commands target the plan this far ahead, and it is the '
                            'time_from_start of joint_trajectory commands (s); 0 means one '
                            'control period')
        self._lookahead = lookahead if lookahead > 0 else 1.0 / self._rate

        self._diagnostics_period = declare(self, 'diagnostics_period', 1.0,
                                           'time between two diagnostics messages (s)')
        self._overrides = {
            name: common.declare_array(self, name, Parameter.Type.DOUBLE_ARRAY,
                                       f'{meaning}, one per joint; may only narrow the URDF '
                                       'limits; empty keeps the URDF')
            for name, meaning in (('lower_override', 'lower position limits (rad)'),
                                  ('upper_override', 'upper position limits (rad)'),
                                  ('velocity_override', 'velocity limits (rad/s)'))}
        self._robot_description = declare(self, 'robot_description', '',
                                          'URDF XML; empty reads urdf_path or the topic')
        self._urdf_path = declare(self, 'urdf_path', '',
                                  'URDF file, absolute or relative to the package share')

        topics = {
            'plan_topic': common.PLAN_TOPIC,
            'joint_states_topic': common.JOINT_STATES_TOPIC,
            'surprise_topic': common.SURPRISE_TOPIC,
            'trajectory_command_topic': common.TRAJECTORY_COMMAND_TOPIC,
            'forward_command_topic': common.FORWARD_COMMAND_TOPIC,
            'diagnostics_topic': common.DIAGNOSTICS_TOPIC,
            'robot_description_topic': common.ROBOT_DESCRIPTION_TOPIC,
        }
        for name, default in topics.items():
            declare(self, name, default, 'topic name')

    def _topic(self, name: str) -> str:
        return self.get_parameter(name).value

    def _make_command_publisher(self):
        if self._interface == 'joint_trajectory':
            self._command_topic = self._topic('trajectory_command_topic')
            msg_type = JointTrajectory
        else:
            self._command_topic = self._topic('forward_command_topic')
            msg_type = Float64MultiArray
        return self.create_publisher(msg_type, self._command_topic, common.RELIABLE_QOS)

    def _load_robot_description(self) -> None:
        """Configure the filter from the parameter, the file or (later) the latched topic."""
        if self._robot_description:
            self._configure(self._robot_description, 'the robot_description parameter')
            return
        if self._urdf_path:
            path = paths.resolve(self._urdf_path)
            self._configure(path.read_text(encoding='utf-8'), str(path))
            return
        topic = self._topic('robot_description_topic')
        self.get_logger().info(f'waiting for the robot description on {topic}')
        self._description_sub = self.create_subscription(
            String, topic, self._on_robot_description, common.LATCHED_QOS)

    def _configure(self, urdf: str, source: str) -> None:
        """Build the safety filter; ValueError for limits that cannot be used."""
        config = SafetyConfig.from_limits(
            parse_urdf_limits(urdf), joint_names=self._joints or None,
            lower_override=self._overrides['lower_override'],
            upper_override=self._overrides['upper_override'],
            velocity_override=self._overrides['velocity_override'],
            control_period=1.0 / self._rate, max_step=self._max_step,
            plan_timeout=self._plan_timeout, state_timeout=self._state_timeout,
            surprise_threshold=self._surprise_threshold, auto_enable=self._auto_enable,
            lookahead=self._lookahead)
        self._filter = SafetyFilter(config)
        if self._estop_requested:
            self._filter.estop()
        limits = ', '.join(f'{n} [{lo:.3f}, {hi:.3f}] rad, {s:.3f} rad/command'
                           for n, lo, hi, s in zip(config.joint_names, config.lower,
                                                   config.upper, config.step_limit))
        self.get_logger().info(f'joint limits from {source}: {limits}')

    # ----------------------------------------------------------------------------------------
    # Inputs

    def _on_robot_description(self, msg: String) -> None:
        if self._filter is not None:
            return
        try:
            self._configure(msg.data, 'the robot_description topic')
        except ValueError as error:
            self.get_logger().error(f'robot description rejected: {error}',
                                    throttle_duration_sec=5.0)

    def _rejection(self, before) -> str:
        grown = [key for key, value in self._filter.counters.items() if value > before[key]]
        return ', '.join(grown) or 'unknown'

    def _on_plan(self, msg: JointTrajectory) -> None:
        if self._filter is None:
            return
        before = self._filter.counters.copy()
        now = common.now_seconds(self)
        times = [Duration.from_msg(p.time_from_start).nanoseconds * 1e-9 for p in msg.points]
        positions = [list(p.positions) for p in msg.points]
        accepted = self._filter.update_plan(msg.joint_names, times, positions,
                                            common.stamp_to_seconds(msg.header.stamp), now)
        if not accepted and self._filter.state == safety.ENABLED:
            self.get_logger().warning(
                f'plan rejected ({self._rejection(before)}): joints {list(msg.joint_names)}, '
                f'{len(msg.points)} points', throttle_duration_sec=2.0)

    def _on_joint_state(self, msg: JointState) -> None:
        if self._filter is None:
            return
        before = self._filter.counters.copy()
        accepted = self._filter.update_joint_state(
            msg.name, list(msg.position), common.stamp_to_seconds(msg.header.stamp),
            common.now_seconds(self))
        if not accepted:
            self.get_logger().warning(
                f'joint state rejected ({self._rejection(before)}): names {list(msg.name)}',
                throttle_duration_sec=2.0)

    def _on_surprise(self, msg: Float64) -> None:
        if self._filter is None:
            return
        was_enabled = self._filter.state == safety.ENABLED
        if not self._filter.update_surprise(msg.data, common.now_seconds(self)):
            self.get_logger().warning(f'surprise value {msg.data} rejected',
                                      throttle_duration_sec=2.0)
        elif was_enabled and self._filter.state == safety.SURPRISE_HALT:
            self.get_logger().error(
                f'surprise {msg.data:.4g} exceeds {self._surprise_threshold:g}: holding position '
                'until ~/enable is called')

    def _on_estop(self, request, response):
        self._estop_requested = True
        if self._filter is not None:
            self._filter.estop()
        self.get_logger().error('e-stop latched: holding position until ~/enable is called')
        response.success = True
        response.message = 'e-stop latched; call ~/enable with data: true to resume'
        return response

    def _on_enable(self, request, response):
        if self._filter is None:
            response.success = False
            response.message = 'no robot description received yet, so no joint limits'
            return response
        if request.data:
            self._estop_requested = False
            self._filter.enable()
            response.message = 'enabled; e-stop and surprise halt cleared'
        else:
            self._filter.disable()
            response.message = ('disabled; no commands are sent' if
                                self._filter.state == safety.DISABLED else
                                'e-stop stays latched; enable with data: true to clear it')
        self.get_logger().info(response.message)
        response.success = True
        return response

    # ----------------------------------------------------------------------------------------
    # Output

    def _on_tick(self) -> None:
        if self._filter is None:
            return
        command = self._filter.step(common.now_seconds(self))
        if command.positions is None:
            return
        positions = [float(v) for v in command.positions]
        if self._interface == 'joint_trajectory':
            msg = JointTrajectory()
            # With a zero stamp, joint_trajectory_controller starts the trajectory immediately.
            msg.joint_names = list(self._filter.config.joint_names)
            point = JointTrajectoryPoint()
            point.positions = positions
            point.time_from_start = Duration(seconds=self._lookahead).to_msg()
            msg.points = [point]
        else:
            msg = Float64MultiArray()
            msg.data = positions
        self._command_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus()
        status.name = f'{self.get_name()}: safety filter'
        status.hardware_id = self._command_topic
        if self._filter is None:
            status.level = DiagnosticStatus.WARN
            status.message = 'waiting for the robot description'
        else:
            reason = self._filter.last_reason
            status.level = _LEVELS.get(reason, DiagnosticStatus.WARN)
            status.message = f'{self._filter.state}: {reason}'
            values = {'state': self._filter.state, 'reason': reason,
                      'joints': ','.join(self._filter.config.joint_names)}
            values.update({key: str(value)
                           for key, value in sorted(self._filter.counters.items())})
            status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diagnostics_pub.publish(msg)


def main(args=None):
    common.run_node(ActuatorNode, args)


if __name__ == '__main__':
    main()
