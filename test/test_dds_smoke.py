"""DDS smoke tests: real rclpy processes exchanging messages and reading parameter files."""

import json
from pathlib import Path
import subprocess
import sys
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.ros

HELPERS = Path(__file__).resolve().parent / 'helpers'
RECEIVE_TIMEOUT_S = 30.0


def _run_helper(script: str, *args: str, env: dict, timeout: float = 30.0):
    return subprocess.run(
        [sys.executable, str(HELPERS / script), *args], env=env, capture_output=True,
        text=True, timeout=timeout)


def _sent_fields() -> dict:
    """Message fields chosen so that any conversion or truncation changes a value."""
    rng = np.random.default_rng(20261204)
    height, width, padding = 5, 7, 3
    step = width * 3 + padding
    rows = rng.integers(0, 256, size=(height, step), dtype=np.uint8)
    return {
        'stamp': np.array([1_733_300_000, 999_999_999], dtype=np.int64),
        'image_frame_id': 'camera_optical_frame',
        'image_height': height,
        'image_width': width,
        'image_encoding': 'rgb8',
        'image_step': step,
        'image_data': rows.reshape(-1),
        'joint_names': np.array(['shoulder_pan', 'shoulder_lift', 'elbow', 'wrist']),
        # Values that float32 or text formatting would alter.
        'joint_position': np.array([np.pi, -np.nextafter(1.0, 2.0), 1e-300, -0.0]),
        'joint_velocity': np.array([0.1, 0.2, 0.3, 1.0 / 3.0]),
        'joint_effort': np.array([-1e300, 5e-324, 2.0**52 + 1.0, 0.0]),
    }


def test_image_and_joint_state_round_trip(tmp_path, ros_env):
    sent = _sent_fields()
    np.savez(tmp_path / 'sent.npz', **sent)
    received_path = tmp_path / 'received.npz'
    # A unique namespace keeps this exchange apart even if another run shares the domain.
    prefix = f'/dds_smoke_{uuid.uuid4().hex[:8]}'

    subscriber = subprocess.Popen(
        [sys.executable, str(HELPERS / 'dds_endpoint.py'), 'subscribe', '--prefix', prefix,
         '--out', str(received_path), '--timeout', str(RECEIVE_TIMEOUT_S)],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen(
        [sys.executable, str(HELPERS / 'dds_endpoint.py'), 'publish', '--prefix', prefix,
         '--data', str(tmp_path / 'sent.npz')],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sub_out, sub_err = subscriber.communicate(timeout=RECEIVE_TIMEOUT_S + 15)
    finally:
        for process in (subscriber, publisher):
            if process.poll() is None:
                process.terminate()
        pub_out, pub_err = publisher.communicate(timeout=15)
        if subscriber.poll() is None:
            subscriber.kill()

    assert subscriber.returncode == 0, (
        f'subscriber failed ({subscriber.returncode}):\n{sub_err}\npublisher stderr:\n{pub_err}')
    received = np.load(received_path)

    assert received['stamp'].tolist() == sent['stamp'].tolist()
    assert str(received['image_frame_id']) == sent['image_frame_id']
    assert int(received['image_height']) == sent['image_height']
    assert int(received['image_width']) == sent['image_width']
    assert str(received['image_encoding']) == sent['image_encoding']
    assert int(received['image_is_bigendian']) == 0
    assert int(received['image_step']) == sent['image_step']
    assert received['image_data'].tobytes() == sent['image_data'].tobytes()
    rows = received['image_data'].reshape(sent['image_height'], sent['image_step'])
    sent_rows = sent['image_data'].reshape(sent['image_height'], sent['image_step'])
    pixels = rows[:, :sent['image_width'] * 3].reshape(sent['image_height'], -1, 3)
    assert np.array_equal(pixels, sent_rows[:, :sent['image_width'] * 3].reshape(pixels.shape))

    assert received['joint_stamp'].tolist() == sent['stamp'].tolist()
    assert received['joint_names'].tolist() == sent['joint_names'].tolist()
    for field in ('joint_position', 'joint_velocity', 'joint_effort'):
        # Bitwise equality: -0.0 and subnormals must survive too.
        assert received[field].dtype == np.float64
        assert received[field].tobytes() == sent[field].tobytes(), field


def _dump_parameters(tmp_path, ros_env, node_name: str, yaml_text: str) -> dict:
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml_text)
    result = _run_helper('param_dump.py', '--name', node_name, '--ros-args', '--params-file',
                         str(params_file), env=ros_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


NODE_PARAMS_YAML = """\
planner_node:
  ros__parameters:
    control_rate: 12.5
    horizon: 8
    enabled: true
    model_path: models/reach_small
    joint_names: [shoulder_pan, elbow]
    action_bounds: [-0.05, 0.05]
"""

WILDCARD_YAML = """\
/**:
  ros__parameters:
    use_sim_time: true
    horizon: 3
"""


def test_params_file_node_name_section(tmp_path, ros_env):
    values = _dump_parameters(tmp_path, ros_env, 'planner_node', NODE_PARAMS_YAML)

    assert values['control_rate'] == 12.5
    assert values['horizon'] == 8
    assert values['enabled'] is True
    assert values['model_path'] == 'models/reach_small'
    assert values['joint_names'] == ['shoulder_pan', 'elbow']
    assert values['action_bounds'] == [-0.05, 0.05]
    assert values['use_sim_time'] is False


def test_params_file_other_node_ignored(tmp_path, ros_env):
    values = _dump_parameters(tmp_path, ros_env, 'actuator_node', NODE_PARAMS_YAML)

    assert values['control_rate'] == 10.0
    assert values['horizon'] == 5
    assert values['joint_names'] == ['none']


def test_params_file_wildcard_section(tmp_path, ros_env):
    values = _dump_parameters(tmp_path, ros_env, 'perception_node', WILDCARD_YAML)

    assert values['use_sim_time'] is True
    assert values['horizon'] == 3
    assert values['control_rate'] == 10.0


@pytest.mark.parametrize('wildcard_first, expected_horizon', [(True, 8), (False, 3)])
def test_params_file_later_section_wins(tmp_path, ros_env, wildcard_first, expected_horizon):
    # rcl applies the sections in file order, so a node section meant to override shared
    # values must come after the /** section.
    sections = [WILDCARD_YAML, NODE_PARAMS_YAML]
    if not wildcard_first:
        sections.reverse()
    values = _dump_parameters(tmp_path, ros_env, 'planner_node', ''.join(sections))

    assert values['horizon'] == expected_horizon
    assert values['use_sim_time'] is True
    assert values['control_rate'] == 12.5
