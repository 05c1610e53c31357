"""Tests of ``lewm import-bag`` on rosbag2 recordings that the tests write with rosbags."""

import argparse

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from lewm_ros.data import bag_import
from lewm_ros.data.bag_import import convert_bag, import_bag, ImportSettings
from lewm_ros.data.episodes import read_episodes
from lewm_ros.imaging import array_to_image

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
JOINTS = ['shoulder', 'elbow']
# Joint positions move linearly in time, so interpolation reproduces them exactly.
SLOPE = np.array([0.5, -0.25])
BIAS = np.array([0.1, 0.4])
HEIGHT, WIDTH = 32, 48

# Parts of the recording: (stamp of the first message, images, receive time minus stamp).
# Part B follows a 1 s gap; part C restarts the clock at 50 s, as after a simulator reset.
PARTS = [(100.0, 20, 0.001), (103.0, 10, 0.001), (50.0, 10, 55.0)]
DROPPED_IMAGES = {(0, 5), (0, 6)}


def _time(seconds):
    sec = int(np.floor(seconds))
    return TYPESTORE.types['builtin_interfaces/msg/Time'](
        sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


def _header(stamp, frame='camera_optical_frame'):
    return TYPESTORE.types['std_msgs/msg/Header'](stamp=_time(stamp), frame_id=frame)


def _colour(part, index):
    """Colour of image ``index`` of ``part``; red encodes the part and the index."""
    return np.array([20 + 10 * part + 5 * index, 7, 200], dtype=np.uint8)


def _image_msg(stamp, rgb, encoding):
    header = _header(stamp)
    if encoding == 'compressed':
        ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        return TYPESTORE.types['sensor_msgs/msg/CompressedImage'](
            header=header, format='png', data=png.reshape(-1))
    if encoding in ('bgr8', 'bgra8'):
        array = rgb[:, :, ::-1]
    elif encoding == 'mono8':
        array = rgb[:, :, 0]
    elif encoding == 'mono16':
        array = rgb[:, :, 0].astype(np.uint16) * 257
    else:
        array = rgb
    if encoding in ('rgba8', 'bgra8'):
        array = np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])
    # Pad every row by 6 bytes to exercise the step handling.
    fields = array_to_image(array, encoding, step=None, is_bigendian=encoding == 'mono16')
    fields = array_to_image(array, encoding, step=fields.step + 6,
                            is_bigendian=encoding == 'mono16')
    return TYPESTORE.types['sensor_msgs/msg/Image'](
        header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
        is_bigendian=fields.is_bigendian, step=fields.step,
        data=np.frombuffer(fields.data, dtype=np.uint8))


def _command_value(part, m):
    return np.array([0.2 + 0.01 * m + part, -0.3 - 0.02 * m])


def write_bag(path, storage='mcap', encoding='rgb8', command='trajectory', parts=PARTS,
              velocities=True):
    """Write a recording with known content: 3 parts, 2 dropped images, 1 swapped stamp pair."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    image_type = ('sensor_msgs/msg/CompressedImage' if encoding == 'compressed'
                  else 'sensor_msgs/msg/Image')
    command_type = ('trajectory_msgs/msg/JointTrajectory' if command == 'trajectory'
                    else 'std_msgs/msg/Float64MultiArray')
    records = []
    for part, (start, images, delay) in enumerate(parts):
        for i in range(images):
            if (part, i) in DROPPED_IMAGES:
                continue
            stamp = start + 0.1 * i + 0.013
            rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            rgb[:] = _colour(part, i)
            records.append(('image', stamp + delay, _image_msg(stamp, rgb, encoding)))
        joint_steps = int(round(images * 0.1 / 0.02))
        order = list(range(joint_steps))
        if part == 0:
            order[10], order[11] = order[11], order[10]
        for slot, j in enumerate(order):
            stamp = start + 0.02 * j
            position = SLOPE * (stamp - start) + BIAS + part
            # Names in another order than the columns, plus a joint that is not imported.
            msg = TYPESTORE.types['sensor_msgs/msg/JointState'](
                header=_header(stamp, ''), name=['elbow', 'gripper', 'shoulder'],
                position=np.array([position[1], 0.02, position[0]]),
                velocity=np.array([SLOPE[1], 0.0, SLOPE[0]]) if velocities else np.zeros(0),
                effort=np.zeros(3))
            records.append(('joints', start + 0.02 * slot + delay, msg))
        for m in range(images):
            stamp = start + 0.1 * m + 0.05
            value = _command_value(part, m)
            if command == 'trajectory':
                point = TYPESTORE.types['trajectory_msgs/msg/JointTrajectoryPoint'](
                    positions=value[::-1].copy(), velocities=np.zeros(0),
                    accelerations=np.zeros(0), effort=np.zeros(0),
                    time_from_start=TYPESTORE.types['builtin_interfaces/msg/Duration'](
                        sec=0, nanosec=0))
                msg = TYPESTORE.types['trajectory_msgs/msg/JointTrajectory'](
                    header=_header(stamp, ''), joint_names=['elbow', 'shoulder'],
                    points=[point])
            else:
                layout = TYPESTORE.types['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0)
                # The controller orders its joints elbow first.
                msg = TYPESTORE.types['std_msgs/msg/Float64MultiArray'](
                    layout=layout, data=value[::-1].copy())
            records.append(('command', stamp + delay, msg))

    topics = {'image': ('/camera/image_raw', image_type),
              'joints': ('/joint_states', 'sensor_msgs/msg/JointState'),
              'command': ('/arm/commands', command_type)}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {kind: writer.add_connection(topic, msgtype, typestore=TYPESTORE)
                       for kind, (topic, msgtype) in topics.items()}
        for kind, received, msg in sorted(records, key=lambda r: r[1]):
            data = TYPESTORE.serialize_cdr(msg, topics[kind][1])
            writer.write(connections[kind], int(round(received * 1e9)), data)


def lewm_import_bag(argv):
    """Run ``lewm import-bag`` with ``argv`` through its own argument parser."""
    parser = argparse.ArgumentParser()
    bag_import.add_arguments(parser)
    return bag_import.run(parser.parse_args(argv))


def _settings(**overrides):
    values = {'joint_names': JOINTS, 'image_size': 16, 'control_period': 0.1,
              'command_joint_names': ['elbow', 'shoulder']}
    values.update(overrides)
    return ImportSettings(**values)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('command', ['trajectory', 'multiarray'])
def test_bag_import_gaps_jumps_and_values(tmp_path, storage, command):
    bag = tmp_path / 'bag'
    write_bag(bag, storage=storage, command=command)
    episodes, report = convert_bag(bag, _settings())
    assert report.episode_lengths == [20, 10, 10]
    assert report.clock_jumps == 1
    assert report.gap_splits == 2
    assert report.dropped_frames == 2
    assert report.out_of_order == 1

    for part, episode in enumerate(episodes):
        start = PARTS[part][0]
        steps = len(episode['pixels'])
        grid = start + 0.013 + 0.1 * np.arange(steps)
        expected_q = SLOPE * (grid - start)[:, None] + BIAS + part
        np.testing.assert_allclose(episode['proprio'][:, :2], expected_q, atol=1e-9)
        np.testing.assert_allclose(episode['proprio'][:, 2:], np.tile(SLOPE, (steps, 1)))
        for k in range(steps):
            # Dropped images 5 and 6 of part A are replaced by image 4.
            expected_index = k if (part, k) not in DROPPED_IMAGES else 4
            np.testing.assert_array_equal(episode['pixels'][k, 8, 8],
                                          _colour(part, expected_index))
        expected_cmd = np.array([_command_value(part, k) for k in range(steps - 1)])
        np.testing.assert_allclose(episode['q_cmd'][:-1], expected_cmd, atol=1e-12)
        assert np.isnan(episode['q_cmd'][-1]).all()
        assert np.isnan(episode['action'][-1]).all()
        np.testing.assert_allclose(episode['action'][0], expected_cmd[0] - expected_q[0],
                                   atol=1e-12)
        np.testing.assert_allclose(episode['action'][1:-1], np.tile([0.01, -0.02], (steps - 2, 1)),
                                   atol=1e-12)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16',
                                      'compressed'])
def test_bag_import_image_encodings(tmp_path, encoding):
    bag = tmp_path / 'bag'
    write_bag(bag, storage='mcap', encoding=encoding, parts=[(10.0, 4, 0.001)])
    episodes, report = convert_bag(bag, _settings())
    assert report.episode_lengths == [4]
    pixels = episodes[0]['pixels']
    assert pixels.shape == (4, 16, 16, 3)
    for k in range(4):
        expected = _colour(0, k)
        if encoding.startswith('mono'):
            expected = np.repeat(expected[0], 3)
        np.testing.assert_array_equal(pixels[k].reshape(-1, 3), np.tile(expected, (256, 1)))


def test_bag_import_writes_episode_file(tmp_path):
    bag, output = tmp_path / 'bag', tmp_path / 'bag.h5'
    write_bag(bag, storage='sqlite3')
    code = lewm_import_bag([str(bag), str(output), '--joints', *JOINTS, '--image-size', '16'])
    assert code == 0
    arrays, attrs = read_episodes(output)
    np.testing.assert_array_equal(arrays['ep_len'], [20, 10, 10])
    np.testing.assert_array_equal(arrays['ep_offset'], [0, 20, 30])
    assert arrays['pixels'].shape == (40, 16, 16, 3)
    assert arrays['proprio'].shape == (40, 4)
    assert arrays['q_cmd'].shape == (40, 2)
    assert attrs['joint_names'] == JOINTS
    assert attrs['control_period'] == 0.1
    assert attrs['camera'] == '/camera/image_raw'
    assert attrs['source'] == 'rosbag2:bag'
    # Existing output is kept unless --overwrite.
    assert lewm_import_bag([str(bag), str(output), '--joints', *JOINTS]) == 1


def test_bag_import_larger_gap_threshold_merges(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag)
    _, report = convert_bag(bag, _settings(max_gap=1.5))
    # Parts A (100.013 s to 101.913 s) and B (103.013 s to 103.913 s) become one episode of
    # 40 steps. The 10 steps in the gap repeat the last frame of part A.
    assert report.episode_lengths == [40, 10]
    assert report.gap_splits == 0
    assert report.dropped_frames == 2 + 10


def test_bag_import_rejects_bad_input(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, parts=[(10.0, 4, 0.001)])
    with pytest.raises(ValueError, match='wrist'):
        convert_bag(bag, _settings(joint_names=['shoulder', 'wrist']))
    with pytest.raises(ValueError, match='--image-topic'):
        convert_bag(bag, _settings(image_topic='/camera/missing'))
    with pytest.raises(ValueError, match='max_gap'):
        convert_bag(bag, _settings(max_gap=0.01))
    with pytest.raises(FileNotFoundError):
        convert_bag(tmp_path / 'nothing', _settings())
    multiarray = tmp_path / 'multiarray'
    write_bag(multiarray, command='multiarray', parts=[(10.0, 4, 0.001)])
    with pytest.raises(ValueError, match='--command-joints'):
        convert_bag(multiarray, _settings(command_joint_names=['a', 'b', 'c']))
    with pytest.raises(ValueError, match='no episode'):
        import_bag(bag, tmp_path / 'short.h5', _settings(min_steps=50))


def test_bag_import_differentiates_missing_velocity(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, parts=[(10.0, 6, 0.001)], velocities=False)
    episodes, _ = convert_bag(bag, _settings())
    velocity = episodes[0]['proprio'][:, 2:]
    # Image 5 of part A is dropped, so the episode ends with image 4.
    assert velocity.shape == (5, 2)
    np.testing.assert_allclose(velocity, np.tile(SLOPE, (5, 1)), atol=1e-9)


def test_bag_import_needs_command_order(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, command='multiarray', parts=[(10.0, 6, 0.001)])
    # Without the controller order the values are read in column order, i.e. swapped.
    episodes, _ = convert_bag(bag, _settings(command_joint_names=None))
    np.testing.assert_allclose(episodes[0]['q_cmd'][0], _command_value(0, 0)[::-1])
    episodes, _ = convert_bag(bag, _settings())
    np.testing.assert_allclose(episodes[0]['q_cmd'][0], _command_value(0, 0))
