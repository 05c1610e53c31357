"""Tests of sim_node running as a separate process, driven over DDS on loopback."""

import math
import os
from pathlib import Path
import subprocess
import time

from geometry_msgs.msg import PointStamped
from helpers import nodes
import numpy as np
import pytest
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros.nodes import common

pytestmark = pytest.mark.ros

JOINTS = ['base_yaw', 'shoulder_pitch', 'elbow_pitch']
INITIAL = [0.0, 0.3, 0.9]
IMAGE_SIZE = 48
# Position error the MuJoCo position servos settle within after a move (rad).
SETTLE_TOLERANCE = 0.02


def start_sim(tmp_path: Path, env: dict, name: str, **params) -> subprocess.Popen:
    """Start sim_node with ``params`` under the node name ``name``; its log goes to tmp_path."""
    return nodes.start_node('lewm_ros.nodes.sim_node', name, params, env,
                            tmp_path / f'{name}.log', namespace=f'/{name}_ns')


def stop(process: subprocess.Popen) -> None:
    nodes.stop_process(process)


class SimProbe:
    """Test-side rclpy node that records what one sim_node publishes and calls its services."""

    def __init__(self, namespace: str, node_name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f'{node_name}_probe', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        node = self.node
        self.images, self.infos, self.joints, self.clocks = [], [], [], []
        self.goal_images, self.goal_points, self.ee_points = [], [], []
        node.create_subscription(Image, 'camera/image_raw', self.images.append,
                                 qos_profile_sensor_data)
        node.create_subscription(CameraInfo, 'camera/camera_info', self.infos.append,
                                 qos_profile_sensor_data)
        node.create_subscription(JointState, 'joint_states', self.joints.append,
                                 qos_profile_sensor_data)
        node.create_subscription(Clock, '/clock', self.clocks.append, qos_profile_sensor_data)
        node.create_subscription(Image, 'lewm/goal_image', self.goal_images.append,
                                 common.LATCHED_QOS)
        node.create_subscription(PointStamped, 'sim/goal_ee_position', self.goal_points.append,
                                 common.LATCHED_QOS)
        node.create_subscription(PointStamped, 'sim/ee_position', self.ee_points.append,
                                 qos_profile_sensor_data)
        self.forward_pub = node.create_publisher(
            Float64MultiArray, 'forward_position_controller/commands', common.RELIABLE_QOS)
        self.trajectory_pub = node.create_publisher(
            JointTrajectory, 'joint_trajectory_controller/joint_trajectory',
            common.RELIABLE_QOS)
        self.goal_joint_pub = node.create_publisher(JointState, 'sim/goal_joint_positions',
                                                    common.RELIABLE_QOS)
        self.reset_client = node.create_client(Trigger, f'{node_name}/reset')
        self.goal_client = node.create_client(Trigger, f'{node_name}/publish_goal')
        self.parameter_client = node.create_client(SetParameters,
                                                   f'{node_name}/set_parameters')

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return True
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, client, request, timeout: float = 10.0):
        assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f'{client.srv_name} did not answer'
        return future.result()

    def position(self) -> np.ndarray:
        message = self.joints[-1]
        by_name = dict(zip(message.name, message.position))
        return np.array([by_name[name] for name in JOINTS])


@pytest.fixture(scope='module')
def forward_sim(tmp_path_factory, ros_domain_id):
    """One sim_node with the forward position interface, at twice the wall-clock rate."""
    tmp_path = tmp_path_factory.mktemp('sim_forward')
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONUNBUFFERED='1')
    process = start_sim(tmp_path, env, 'sim_fwd', image_size=IMAGE_SIZE,
                        initial_positions=INITIAL, real_time_factor=2.0,
                        command_interface='forward_position')
    probe = SimProbe('/sim_fwd_ns', 'sim_fwd')
    try:
        assert probe.spin_until(lambda: len(probe.joints) > 2, 30), \
            (tmp_path / 'sim_fwd.log').read_text()
        yield probe
    finally:
        probe.close()
        stop(process)


@pytest.fixture(scope='module')
def trajectory_sim(tmp_path_factory, ros_domain_id):
    tmp_path = tmp_path_factory.mktemp('sim_trajectory')
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONUNBUFFERED='1')
    process = start_sim(tmp_path, env, 'sim_jtc', image_size=IMAGE_SIZE,
                        initial_positions=INITIAL, real_time_factor=1.0,
                        command_interface='joint_trajectory', with_object=False)
    probe = SimProbe('/sim_jtc_ns', 'sim_jtc')
    try:
        assert probe.spin_until(lambda: len(probe.joints) > 2, 30), \
            (tmp_path / 'sim_jtc.log').read_text()
        yield probe
    finally:
        probe.close()
        stop(process)


def test_sim_publishes_sensor_streams(forward_sim):
    probe = forward_sim
    probe.spin_until(lambda: len(probe.images) > 3 and len(probe.infos) > 3, 10)
    image = probe.images[-1]
    assert image.encoding == 'rgb8'
    assert (image.height, image.width, image.step) == (IMAGE_SIZE, IMAGE_SIZE, 3 * IMAGE_SIZE)
    assert image.header.frame_id == 'camera_optical_frame'
    assert len(image.data) == IMAGE_SIZE * IMAGE_SIZE * 3
    pixels = np.frombuffer(bytes(image.data), np.uint8)
    assert pixels.std() > 5, 'the camera image is blank'

    # Image stamps advance by exactly one control period (0.1 s of simulated time).
    stamps = [common.stamp_to_seconds(m.header.stamp) for m in probe.images[-4:]]
    assert np.allclose(np.diff(stamps), 0.1, atol=1e-6)

    info = probe.infos[-1]
    focal = 0.5 * IMAGE_SIZE / math.tan(math.radians(45.0) / 2)
    assert info.width == IMAGE_SIZE
    assert info.height == IMAGE_SIZE
    assert info.k[0] == pytest.approx(focal)  # fx
    assert info.k[4] == pytest.approx(focal)  # fy
    assert info.k[2] == pytest.approx(IMAGE_SIZE / 2)  # cx
    assert info.k[5] == pytest.approx(IMAGE_SIZE / 2)  # cy
    assert info.header.frame_id == 'camera_optical_frame'

    joints = probe.joints[-1]
    assert list(joints.name) == JOINTS
    assert np.allclose(probe.position(), INITIAL, atol=SETTLE_TOLERANCE)

    # /clock follows the stamps: never behind the last image, and it moves between steps.
    assert probe.clocks, 'no /clock message'
    clock_times = [common.stamp_to_seconds(m.clock) for m in probe.clocks]
    assert np.all(np.diff(clock_times) > 0)
    assert len(set(np.round(np.array(clock_times) % 0.1, 3))) > 1


def test_sim_forward_command_moves_joints(forward_sim):
    probe = forward_sim
    target = [0.4, 0.1, 1.2]
    for _ in range(3):
        probe.forward_pub.publish(Float64MultiArray(data=target))
        probe.spin_for(0.1)
    # The largest move is 0.4 rad at 2 rad/s: 2 s of simulated time are plenty.
    reached = probe.spin_until(
        lambda: np.allclose(probe.position(), target, atol=SETTLE_TOLERANCE), 15)
    assert reached, f'joints at {probe.position()}, commanded {target}'

    # The command is held: the arm stays at the target without new messages.
    probe.spin_for(1.0)
    assert np.allclose(probe.position(), target, atol=SETTLE_TOLERANCE)

    # The tool position follows the joints: it differs from the start pose.
    assert probe.ee_points, 'no sim/ee_position message'


def test_sim_rejects_malformed_command(forward_sim):
    probe = forward_sim
    before = probe.position()
    probe.forward_pub.publish(Float64MultiArray(data=[0.5, 0.5]))
    probe.forward_pub.publish(Float64MultiArray(data=[math.nan, 0.0, 0.0]))
    probe.spin_for(1.0)
    assert np.allclose(probe.position(), before, atol=SETTLE_TOLERANCE)


def test_sim_reset_restores_initial_positions(forward_sim):
    probe = forward_sim
    probe.forward_pub.publish(Float64MultiArray(data=[-0.3, 0.0, 0.5]))
    probe.spin_until(lambda: abs(probe.position()[0] + 0.3) < 0.05, 15)
    assert abs(probe.position()[0] + 0.3) < 0.05
    last_stamp = common.stamp_to_seconds(probe.images[-1].header.stamp)

    response = probe.call(probe.reset_client, Trigger.Request())
    assert response.success, response.message
    count = len(probe.joints)
    probe.spin_until(lambda: len(probe.joints) > count + 3, 10)
    assert np.allclose(probe.position(), INITIAL, atol=SETTLE_TOLERANCE)
    # Simulated time keeps increasing through a reset.
    assert common.stamp_to_seconds(probe.images[-1].header.stamp) > last_stamp


def test_sim_goal_image_matches_render_goal(forward_sim):
    from lewm_ros.sim import ArmEnv

    probe = forward_sim
    goal = [0.5, 0.2, 1.0]
    request = SetParameters.Request(parameters=[
        Parameter('goal_positions', Parameter.Type.DOUBLE_ARRAY, goal).to_parameter_msg()])
    result = probe.call(probe.parameter_client, request)
    assert result.results[0].successful, result.results[0].reason
    count = len(probe.goal_images)
    response = probe.call(probe.goal_client, Trigger.Request())
    assert response.success, response.message
    assert probe.spin_until(lambda: len(probe.goal_images) > count, 10)

    message = probe.goal_images[-1]
    received = np.frombuffer(bytes(message.data), np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
    # The node's cube rests where reset put it, so a fresh env renders the same scene.
    with ArmEnv(image_size=IMAGE_SIZE) as env:
        env.reset(qpos=INITIAL)
        expected = env.render_goal(goal)
        env.reset(qpos=goal)
        goal_ee = env.ee_position()
    difference = np.abs(received.astype(int) - expected.astype(int))
    assert difference.mean() < 1.0, f'mean pixel difference {difference.mean():.2f}'

    assert probe.spin_until(lambda: len(probe.goal_points) > 0, 5)
    point = probe.goal_points[-1].point
    assert np.allclose([point.x, point.y, point.z], goal_ee, atol=1e-6)


def test_sim_goal_from_topic(forward_sim):
    probe = forward_sim
    count = len(probe.goal_images)
    probe.goal_joint_pub.publish(JointState(name=JOINTS[::-1], position=[0.8, 0.0, -0.4]))
    assert probe.spin_until(lambda: len(probe.goal_images) > count, 10)
    assert probe.goal_images[-1].encoding == 'rgb8'


def test_sim_rejects_goal_outside_limits(forward_sim):
    probe = forward_sim
    request = SetParameters.Request(parameters=[
        Parameter('goal_positions', Parameter.Type.DOUBLE_ARRAY,
                  [0.0, 3.0, 0.0]).to_parameter_msg()])
    result = probe.call(probe.parameter_client, request)
    assert not result.results[0].successful
    assert 'outside the limits' in result.results[0].reason


def test_sim_joint_trajectory_interface(trajectory_sim):
    probe = trajectory_sim
    start = probe.position()
    trajectory = JointTrajectory(joint_names=['elbow_pitch', 'base_yaw'])
    # Times and targets: elbow and base move 0.2 rad/s over 2 s; shoulder is not named and
    # stays where it is.
    for i, seconds in enumerate((1.0, 2.0)):
        point = JointTrajectoryPoint(positions=[INITIAL[2] + 0.2 * (i + 1), 0.2 * (i + 1)])
        point.time_from_start.sec = int(seconds)
        trajectory.points.append(point)
    probe.trajectory_pub.publish(trajectory)
    t0 = time.monotonic()

    # Halfway (1 s of simulated time at real time factor 1) the arm is near the first point.
    probe.spin_until(lambda: time.monotonic() - t0 > 1.2, 5)
    middle = probe.position()
    assert 0.05 < middle[0] < 0.35, f'base at {middle[0]} after about 1 s'

    final = [0.4, start[1], INITIAL[2] + 0.4]
    reached = probe.spin_until(
        lambda: np.allclose(probe.position(), final, atol=SETTLE_TOLERANCE), 10)
    assert reached, f'joints at {probe.position()}, trajectory ends at {final}'
    probe.spin_for(0.5)
    assert np.allclose(probe.position(), final, atol=SETTLE_TOLERANCE)
