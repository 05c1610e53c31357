"""Tests of actuator_node running as a separate process, driven over DDS on loopback."""

import math
import os
from pathlib import Path
import subprocess
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import nodes
import numpy as np
import pytest
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros.nodes import common

URDF = """<?xml version="1.0"?>
<robot name="test_arm">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <limit lower="-1.0" upper="1.0" velocity="1.0" effort="1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/>
    <limit lower="-0.5" upper="0.5" velocity="2.0" effort="1"/></joint>
  <joint name="j3" type="continuous"><parent link="l2"/><child link="l3"/>
    <limit velocity="0.5" effort="1"/></joint>
</robot>
"""
NAMES = ['j1', 'j2', 'j3']
RATE = 20.0
# Step limit per command: min(max_step 0.04, velocity * 0.05 s) -> 0.04, 0.04, 0.025 rad.
STEP = np.array([0.04, 0.04, 0.025])
MEASURED = [0.2, 0.1, 0.0]
LOWER = np.array([-1.0, -0.5, -math.inf])
UPPER = np.array([1.0, 0.5, math.inf])
# Topic and node names unique to this test process: another test run that happens to use the
# same DDS domain cannot reach this node.
NODE_NAME = f'actuator_node_{os.getpid()}'
PREFIX = f'/actuator_test_{os.getpid()}'
TOPICS = nodes.prefixed_topics(PREFIX, {
    'plan_topic': common.PLAN_TOPIC,
    'joint_states_topic': common.JOINT_STATES_TOPIC,
    'surprise_topic': common.SURPRISE_TOPIC,
    'robot_description_topic': common.ROBOT_DESCRIPTION_TOPIC,
    'trajectory_command_topic': common.TRAJECTORY_COMMAND_TOPIC,
    'forward_command_topic': common.FORWARD_COMMAND_TOPIC,
    'diagnostics_topic': common.DIAGNOSTICS_TOPIC,
})

pytestmark = pytest.mark.ros


def start_node(tmp_path: Path, name: str, **params) -> subprocess.Popen:
    """Start actuator_node as a subprocess with ``params``; its log goes to tmp_path."""
    return nodes.start_node('lewm_ros.nodes.actuator_node', NODE_NAME, {**TOPICS, **params},
                            nodes.node_env(), tmp_path / f'{name}.log')


def stop_node(process: subprocess.Popen) -> None:
    nodes.stop_process(process)


class Harness:
    """A test-side rclpy node: fakes the robot's joint states, sends plans, records commands."""

    def __init__(self, interface: str = 'joint_trajectory', command_joints=NAMES):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('actuator_test_driver', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        node = self.node
        self.plan_pub = node.create_publisher(JointTrajectory, TOPICS['plan_topic'],
                                              common.RELIABLE_QOS)
        self.state_pub = node.create_publisher(JointState, TOPICS['joint_states_topic'],
                                               common.RELIABLE_QOS)
        self.surprise_pub = node.create_publisher(Float64, TOPICS['surprise_topic'],
                                                  common.RELIABLE_QOS)
        self.description_pub = node.create_publisher(String, TOPICS['robot_description_topic'],
                                                     common.LATCHED_QOS)
        self.commands = []
        self.diagnostics = {}
        # The fake robot tracks every command exactly, like an ideal position controller.
        self.command_index = [NAMES.index(name) for name in command_joints]
        if interface == 'joint_trajectory':
            self.command_topic = TOPICS['trajectory_command_topic']
            node.create_subscription(JointTrajectory, self.command_topic, self._on_trajectory,
                                     common.RELIABLE_QOS)
        else:
            self.command_topic = TOPICS['forward_command_topic']
            node.create_subscription(Float64MultiArray, self.command_topic, self._on_forward,
                                     common.RELIABLE_QOS)
        node.create_subscription(DiagnosticArray, TOPICS['diagnostics_topic'],
                                 self._on_diagnostics, common.RELIABLE_QOS)
        self.estop_client = node.create_client(Trigger, f'/{NODE_NAME}/estop')
        self.enable_client = node.create_client(SetBool, f'/{NODE_NAME}/enable')
        self.measured = list(MEASURED)
        self.state_names = list(NAMES)
        self.publish_states = True
        node.create_timer(0.05, self._publish_state)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def _publish_state(self) -> None:
        if not self.publish_states:
            return
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = self.state_names
        msg.position = [float(v) for v in self.measured]
        self.state_pub.publish(msg)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        assert list(msg.joint_names) == NAMES
        assert len(msg.points) == 1
        assert Duration.from_msg(msg.points[0].time_from_start).nanoseconds == 50_000_000
        self._track(msg.points[0].positions)

    def _on_forward(self, msg: Float64MultiArray) -> None:
        self._track(msg.data)

    def _track(self, positions) -> None:
        command = np.array(positions)
        self.commands.append(command)
        for value, index in zip(command, self.command_index):
            self.measured[index] = float(value)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics['level'] = status.level

    def spin_for(self, seconds: float, target=None, plan=None, every: float = 0.2) -> None:
        """Spin for ``seconds`` and replan every ``every`` seconds, like the planner node.

        ``target`` (J,) sends a 1 s ramp from the measured pose to it; ``plan`` (K, J) sends
        these positions unchanged.
        """
        end = time.monotonic() + seconds
        next_plan = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_plan:
                if target is not None:
                    self.send_plan(ramp(target, start=self.measured))
                if plan is not None:
                    self.send_plan(plan)
                next_plan = time.monotonic() + every
            self.executor.spin_once(timeout_sec=0.01)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def wait_for_node(self) -> None:
        assert self.enable_client.wait_for_service(timeout_sec=20.0), 'actuator_node not found'
        assert self.wait_for(lambda: self.node.count_subscribers(TOPICS['plan_topic']) > 0)
        assert self.wait_for(lambda: self.node.count_publishers(self.command_topic) > 0)

    def call(self, client, request):
        future = client.call_async(request)
        assert self.wait_for(future.done), f'service {client.srv_name} did not respond'
        return future.result()

    def enable(self, on: bool = True):
        return self.call(self.enable_client, SetBool.Request(data=on))

    def send_plan(self, positions, names=NAMES, period: float = 0.05, stamp=None) -> None:
        msg = JointTrajectory()
        msg.header.stamp = stamp or self.node.get_clock().now().to_msg()
        msg.joint_names = list(names)
        for k, row in enumerate(np.atleast_2d(positions)):
            point = JointTrajectoryPoint()
            point.positions = [float(v) for v in row]
            point.time_from_start = Duration(seconds=period * (k + 1)).to_msg()
            msg.points.append(point)
        self.plan_pub.publish(msg)

    def reset(self) -> None:
        """Move the fake robot to MEASURED while disabled, then enable and check the hold there."""
        assert self.enable(False).success
        self.spin_for(0.2)
        self.measured = list(MEASURED)
        self.spin_for(0.2)
        assert self.enable().success
        self.spin_for(0.2)
        self.commands.clear()
        self.spin_for(0.2)
        assert self.commands, 'no command after enable'
        np.testing.assert_allclose(self.commands[-1], MEASURED)
        self.commands.clear()


def ramp(target, steps: int = 20, start=MEASURED) -> np.ndarray:
    return np.linspace(start, target, steps + 1)[1:]


def check_limits(commands, lower=LOWER, upper=UPPER, step=STEP) -> None:
    array = np.array(commands)
    lower, upper, step = np.asarray(lower), np.asarray(upper), np.asarray(step)
    assert np.isfinite(array).all()
    assert (array >= lower - 1e-9).all(), array.min(axis=0)
    assert (array <= upper + 1e-9).all(), array.max(axis=0)
    steps = np.abs(np.diff(array, axis=0))
    assert (steps <= step + 1e-9).all(), steps.max(axis=0)


@pytest.fixture(scope='module')
def trajectory_node(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('actuator')
    urdf = tmp_path / 'arm.urdf'
    urdf.write_text(URDF)
    process = start_node(tmp_path, 'trajectory', urdf_path=str(urdf), control_rate_hz=RATE,
                         max_step=0.04, plan_timeout=0.5, state_timeout=0.5,
                         surprise_threshold=1.0, diagnostics_period=0.2)
    harness = Harness('joint_trajectory')
    try:
        harness.wait_for_node()
        yield harness
    finally:
        harness.close()
        stop_node(process)
        print((tmp_path / 'trajectory.log').read_text())


def test_silent_until_enabled(trajectory_node):
    harness = trajectory_node
    harness.spin_for(0.5, target=[0.5, 0.3, 0.2])
    assert harness.commands == []
    assert harness.enable().success
    assert harness.wait_for(lambda: len(harness.commands) >= 3)
    # Plans sent before the enable are dropped, so the arm stays at the measured position.
    np.testing.assert_allclose(harness.commands[0], MEASURED)
    assert harness.enable(False).success
    harness.spin_for(0.3)
    harness.commands.clear()
    harness.spin_for(0.4)
    assert harness.commands == []


def test_clamps_to_limits_and_step(trajectory_node):
    harness = trajectory_node
    harness.reset()
    harness.spin_for(2.5, target=[3.0, -3.0, 1.0])
    check_limits([MEASURED] + harness.commands)
    final = harness.commands[-1]
    assert final[0] == pytest.approx(1.0)
    assert final[1] == pytest.approx(-0.5)
    assert 0.3 < final[2] <= 1.0
    assert int(harness.diagnostics.get('position_clamped', 0)) > 0
    assert int(harness.diagnostics.get('step_limited', 0)) > 0


def test_nan_plan_rejected(trajectory_node):
    harness = trajectory_node
    harness.reset()
    before = int(harness.diagnostics.get('plan_rejected_nonfinite', 0))
    harness.spin_for(0.6, plan=[[0.5, math.nan, 0.0]] * 5)
    assert harness.commands
    for command in harness.commands:
        np.testing.assert_allclose(command, MEASURED)
    assert harness.wait_for(
        lambda: int(harness.diagnostics.get('plan_rejected_nonfinite', 0)) > before)


def test_holds_on_stale_plan(trajectory_node):
    harness = trajectory_node
    harness.reset()
    # One plan over 3 s; plan_timeout is 0.5 s, so it is followed for about 0.5 s only.
    harness.send_plan(ramp([0.9, 0.1, 0.0], steps=60))
    harness.spin_for(1.5)
    check_limits([MEASURED] + harness.commands)
    moving = [c[0] for c in harness.commands]
    assert moving[5] > MEASURED[0]
    tail = harness.commands[-10:]
    for command in tail:
        np.testing.assert_array_equal(command, tail[0])
    # Following at 0.04 rad per command for at most ~0.55 s stops far below 0.9.
    assert 0.25 < tail[0][0] < 0.7
    assert harness.wait_for(lambda: int(harness.diagnostics.get('plan_timeouts', 0)) >= 1)


def test_holds_on_stale_joint_states(trajectory_node):
    harness = trajectory_node
    harness.reset()
    target = [0.9, 0.1, 0.0]
    harness.spin_for(0.3, target=target)
    harness.publish_states = False
    try:
        # Plans keep coming, but without joint states for 0.5 s the node stops following.
        harness.spin_for(0.8, target=target)
        tail = harness.commands[-5:]
        for command in tail:
            np.testing.assert_array_equal(command, tail[0])
        assert harness.wait_for(lambda: harness.diagnostics.get('reason') == 'hold_state_stale')
        assert int(harness.diagnostics['state_timeouts']) >= 1
    finally:
        harness.publish_states = True
    harness.commands.clear()
    harness.spin_for(0.5, target=target)
    assert harness.commands[-1][0] > tail[0][0] + 0.05


def test_estop_latches_until_enable(trajectory_node):
    harness = trajectory_node
    harness.reset()
    target = [-0.8, 0.1, 0.0]
    harness.spin_for(0.4, target=target)
    assert harness.call(harness.estop_client, Trigger.Request()).success
    harness.spin_for(0.2, target=target)
    harness.commands.clear()
    harness.spin_for(0.6, target=target)
    # Disabling does not clear the latch.
    assert harness.enable(False).success
    harness.spin_for(0.4, target=target)
    held = harness.commands
    assert len(held) > 10
    for command in held:
        np.testing.assert_array_equal(command, held[0])
    assert harness.diagnostics['state'] == 'estop'
    assert harness.diagnostics['level'] == DiagnosticStatus.ERROR
    assert harness.enable(True).success
    harness.commands.clear()
    harness.spin_for(0.6, target=target)
    assert harness.commands[-1][0] < held[0][0] - 0.1


def test_surprise_halts(trajectory_node):
    harness = trajectory_node
    harness.reset()
    target = [0.9, 0.1, 0.0]
    harness.surprise_pub.publish(Float64(data=0.5))
    harness.spin_for(0.5, target=target)
    assert harness.commands[-1][0] > MEASURED[0] + 0.05
    harness.surprise_pub.publish(Float64(data=5.0))
    harness.spin_for(0.2, target=target)
    harness.commands.clear()
    harness.spin_for(0.5, target=target)
    for command in harness.commands:
        np.testing.assert_array_equal(command, harness.commands[0])
    assert harness.wait_for(lambda: harness.diagnostics.get('state') == 'surprise_halt')
    assert int(harness.diagnostics['surprise_halts']) >= 1


def test_forward_position_from_description_topic(tmp_path):
    harness = Harness('forward_position', command_joints=['j3', 'j1'])
    process = None
    try:
        # Latched: the node starts after the description was published and still gets it.
        harness.description_pub.publish(String(data=URDF))
        process = start_node(tmp_path, 'forward', command_interface='forward_position',
                             joints=['j3', 'j1'], auto_enable=True, control_rate_hz=RATE,
                             max_step=0.04, upper_override=[0.6, 0.7])
        harness.wait_for_node()
        assert harness.wait_for(lambda: len(harness.commands) >= 2)
        # Controller order: j3 then j1; the test state publishes j1, j2, j3.
        np.testing.assert_allclose(harness.commands[-1], [MEASURED[2], MEASURED[0]])
        harness.spin_for(1.5, target=[2.0, 0.0, 2.0])
        check_limits(harness.commands, lower=[-math.inf, -1.0], upper=[0.6, 0.7],
                     step=[0.025, 0.04])
        np.testing.assert_allclose(harness.commands[-1][1], 0.7)
    finally:
        harness.close()
        if process is not None:
            stop_node(process)
            print((tmp_path / 'forward.log').read_text())


def test_invalid_description_stops_node(tmp_path):
    process = start_node(tmp_path, 'invalid', robot_description='<robot')
    assert process.wait(timeout=30) != 0
    log = (tmp_path / 'invalid.log').read_text()
    assert 'robot description is not valid XML' in log
