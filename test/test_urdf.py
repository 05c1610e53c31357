"""Checks of urdf/lewm_arm.urdf and config/gazebo_controllers.yaml as plain files."""

from pathlib import Path
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from transforms3d.euler import euler2mat
import yaml

ROOT = Path(__file__).resolve().parent.parent
URDF = ROOT / 'urdf' / 'lewm_arm.urdf'
CONTROLLERS = ROOT / 'config' / 'gazebo_controllers.yaml'
ACTUATED = ['base_yaw', 'shoulder_pitch', 'elbow_pitch']


@pytest.fixture(scope='module')
def robot():
    return ElementTree.parse(URDF).getroot()


def _joints(robot):
    return {joint.get('name'): joint for joint in robot.findall('joint')}


def _inertia_matrix(link):
    inertia = link.find('inertial/inertia').attrib
    get = {key: float(value) for key, value in inertia.items()}
    return np.array([[get['ixx'], get['ixy'], get['ixz']],
                     [get['ixy'], get['iyy'], get['iyz']],
                     [get['ixz'], get['iyz'], get['izz']]])


def test_urdf_actuated_joints(robot):
    movable = [j.get('name') for j in robot.findall('joint') if j.get('type') != 'fixed']
    assert movable == ACTUATED
    for name in movable:
        assert _joints(robot)[name].get('type') == 'revolute'


def test_urdf_joint_limits_complete(robot):
    for name in ACTUATED:
        limit = _joints(robot)[name].find('limit')
        assert limit is not None, name
        lower, upper = float(limit.get('lower')), float(limit.get('upper'))
        assert -np.pi <= lower < 0 < upper <= np.pi, name
        assert 0.5 <= float(limit.get('velocity')) <= 4.0, name
        assert 1.0 <= float(limit.get('effort')) <= 100.0, name


def test_urdf_tree_single_root(robot):
    links = {link.get('name') for link in robot.findall('link')}
    children, parent_of = set(), {}
    for joint in robot.findall('joint'):
        parent = joint.find('parent').get('link')
        child = joint.find('child').get('link')
        assert parent in links
        assert child in links
        assert child not in children, f'{child} has two parents'
        children.add(child)
        parent_of[child] = parent
    roots = links - children
    assert roots == {'world'}
    # Every link reaches the root, so the tree is connected and has no cycle.
    for link in links:
        seen = set()
        while link in parent_of:
            assert link not in seen
            seen.add(link)
            link = parent_of[link]
        assert link == 'world'


def test_urdf_inertias_physical(robot):
    checked = 0
    for link in robot.findall('link'):
        if link.find('inertial') is None:
            continue
        checked += 1
        mass = float(link.find('inertial/mass').get('value'))
        assert 0.01 <= mass <= 5.0, link.get('name')
        matrix = _inertia_matrix(link)
        principal = np.linalg.eigvalsh(matrix)
        assert principal.min() > 0, link.get('name')
        a, b, c = principal
        # Sorted principal moments: the triangle inequality reduces to the smallest two.
        assert a + b >= c - 1e-12, link.get('name')
    assert checked >= 6


def test_urdf_visual_colours_and_collisions(robot):
    materials = {m.get('name') for m in robot.findall('material') if m.find('color') is not None}
    for link in robot.findall('link'):
        for visual in link.findall('visual'):
            assert visual.find('material').get('name') in materials, link.get('name')
    for name in ('base_link', 'turret_link', 'upper_arm_link', 'forearm_link', 'tool_link'):
        link = robot.find(f"link[@name='{name}']")
        assert link.find('collision/geometry') is not None, name


def test_urdf_camera_looks_at_arm(robot):
    joints = _joints(robot)
    mount = joints['camera_mount'].find('origin')
    position = np.array([float(v) for v in mount.get('xyz').split()])
    roll, pitch, yaw = (float(v) for v in mount.get('rpy').split())
    optical = joints['camera_optical_joint'].find('origin')
    optical_rpy = [float(v) for v in optical.get('rpy').split()]
    rotation = euler2mat(roll, pitch, yaw, 'sxyz') @ euler2mat(*optical_rpy, 'sxyz')
    # The optical z axis points from the camera towards the arm base at the origin.
    forward = rotation[:, 2]
    towards_arm = np.array([0.0, 0.0, 0.3]) - position
    cosine = forward @ towards_arm / np.linalg.norm(towards_arm)
    assert cosine > 0.98
    # Image x (right) is horizontal and image y points down.
    assert abs(rotation[2, 0]) < 1e-6
    assert rotation[2, 1] < 0


def test_urdf_ros2_control_matches_joints(robot):
    control = robot.find('ros2_control')
    assert control.find('hardware/plugin').text == 'gz_ros2_control/GazeboSimSystem'
    joints = _joints(robot)
    names = [joint.get('name') for joint in control.findall('joint')]
    assert names == ACTUATED
    for joint in control.findall('joint'):
        commands = [c.get('name') for c in joint.findall('command_interface')]
        states = [s.get('name') for s in joint.findall('state_interface')]
        assert commands == ['position']
        assert states == ['position', 'velocity']
        limit = joints[joint.get('name')].find('limit')
        params = {p.get('name'): float(p.text)
                  for p in joint.find('command_interface').findall('param')}
        assert params['min'] == float(limit.get('lower'))
        assert params['max'] == float(limit.get('upper'))


def test_gazebo_plugin_and_controllers(robot):
    plugin = robot.find('gazebo/plugin')
    assert plugin.get('filename') == 'gz_ros2_control-system'
    assert plugin.find('parameters').text.endswith('config/gazebo_controllers.yaml')
    config = yaml.safe_load(CONTROLLERS.read_text())
    manager = config['controller_manager']['ros__parameters']
    assert manager['joint_state_broadcaster']['type'] == (
        'joint_state_broadcaster/JointStateBroadcaster')
    for name in ('joint_trajectory_controller', 'forward_position_controller'):
        assert name in manager
        assert config[name]['ros__parameters']['joints'] == ACTUATED
    assert config['forward_position_controller']['ros__parameters']['interface_name'] == (
        'position')
    assert config['joint_trajectory_controller']['ros__parameters']['command_interfaces'] == [
        'position']
