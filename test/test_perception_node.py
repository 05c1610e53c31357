"""Tests of perception_node running as a separate process, driven over DDS on loopback.

The test saves a small LeWM checkpoint, starts the node on it and compares every published
latent with ``model.encode`` of the image it was made from.
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from helpers import nodes
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
import torch

from lewm_ros.imaging import array_to_image
from lewm_ros.model import LeWM, load_checkpoint, ModelConfig, save_checkpoint
from lewm_ros.nodes import common

JOINTS = ['j1', 'j2', 'j3']
# 224 px with 8 px patches takes tens of milliseconds per frame on one CPU thread, so a flood
# of frames is certain to outrun the encoder.
MODEL_SIZE = dict(image_size=224, patch_size=8)
RNG = np.random.default_rng(0)
# Topic and node names unique to this test process: another test run that happens to use the
# same DDS domain cannot reach this node.
NODE_NAME = f'perception_node_{os.getpid()}'
PREFIX = f'/perception_test_{os.getpid()}'
TOPICS = nodes.prefixed_topics(PREFIX, {
    'image_topic': common.CAMERA_IMAGE_TOPIC,
    'latent_topic': common.LATENT_TOPIC,
    'goal_image_topic': common.GOAL_IMAGE_TOPIC,
    'goal_latent_topic': common.GOAL_LATENT_TOPIC,
    'model_info_topic': common.MODEL_INFO_TOPIC,
    'diagnostics_topic': common.DIAGNOSTICS_TOPIC,
})

pytestmark = pytest.mark.ros


def _rss_mib(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f'no VmRSS for process {pid}')


def _test_image(height: int = 48, width: int = 64) -> np.ndarray:
    """RGB uint8 image with smooth structure (so encodings of different images differ)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                      (x + y) * 255 // (width + height - 2)], axis=2).astype(np.uint8)
    noise = RNG.integers(0, 40, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


class Harness:
    """Test-side rclpy node: publishes images and collects latents by stamp."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('perception_test_driver', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        node = self.node
        self.image_pub = node.create_publisher(Image, TOPICS['image_topic'], 10)
        best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.best_effort_pub = node.create_publisher(Image, TOPICS['image_topic'],
                                                     best_effort)
        self.goal_pub = node.create_publisher(Image, TOPICS['goal_image_topic'],
                                              common.RELIABLE_QOS)
        self.latents = {}
        self.goal_latents = []
        self.model_info = None
        self.diagnostics = {}
        node.create_subscription(Image, TOPICS['latent_topic'], self._on_latent,
                                 common.RELIABLE_QOS)
        node.create_subscription(Image, TOPICS['goal_latent_topic'], self.goal_latents.append,
                                 common.LATCHED_QOS)
        node.create_subscription(String, TOPICS['model_info_topic'], self._on_info,
                                 common.LATCHED_QOS)
        node.create_subscription(DiagnosticArray, TOPICS['diagnostics_topic'],
                                 self._on_diagnostics, common.RELIABLE_QOS)
        self.goal_client = node.create_client(Trigger, f'/{NODE_NAME}/encode_goal_file')
        self._stamp = 0

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def _on_latent(self, msg: Image) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.latents[key] = (msg.header.frame_id, common.msg_to_latent(msg))

    def _on_info(self, msg: String) -> None:
        self.model_info = common.parse_model_info(msg.data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):
                self.diagnostics = {kv.key: int(kv.value) for kv in status.values}

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def next_stamp(self):
        """Return a unique (sec, nanosec) stamp near the current time."""
        self._stamp += 1
        now = self.node.get_clock().now().to_msg()
        return now.sec, self._stamp

    def image_msg(self, fields, frame_id: str = 'camera_optical'):
        msg = fields.copy_to(Image())
        sec, nanosec = self.next_stamp()
        msg.header.stamp.sec = sec
        msg.header.stamp.nanosec = nanosec
        msg.header.frame_id = frame_id
        return msg, (sec, nanosec)

    def encode(self, fields, best_effort: bool = False) -> np.ndarray:
        """Publish an image (resending until its latent arrives) and return the latent."""
        msg, key = self.image_msg(fields)
        publisher = self.best_effort_pub if best_effort else self.image_pub
        for _ in range(10):
            publisher.publish(msg)
            if self.wait_for(lambda: key in self.latents, timeout=2.0):
                frame_id, latent = self.latents[key]
                assert frame_id == 'camera_optical'
                return latent
        raise AssertionError(f'no latent for the {fields.encoding} image stamped {key}')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = LeWM(ModelConfig.preset('small', joint_names=JOINTS, **MODEL_SIZE))
    directory = tmp_path_factory.mktemp('perception') / 'model'
    save_checkpoint(model, directory, data_fingerprint='test-fingerprint')
    return directory


@pytest.fixture(scope='module')
def reference(checkpoint):
    """Load the same model in the test process; return a function RGB (H, W, 3) -> (D,)."""
    model = load_checkpoint(checkpoint)

    def encode(rgb):
        with torch.inference_mode():
            return model.encode(model.preprocess(rgb))[0].numpy()
    encode.model = model
    return encode


@pytest.fixture(scope='module')
def goal_file(checkpoint):
    rgb = _test_image(40, 50)
    path = checkpoint.parent / 'goal.png'
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path, rgb


@pytest.fixture(scope='module')
def perception(checkpoint, goal_file):
    log_path = checkpoint.parent / 'perception.log'
    args = [sys.executable, '-m', 'lewm_ros.nodes.perception_node', '--ros-args',
            '-r', f'__node:={NODE_NAME}',
            *[arg for name, topic in TOPICS.items() for arg in ('-p', f'{name}:={topic}')],
            '-p', f'model:={checkpoint}', '-p', 'torch_threads:=1',
            '-p', f'goal_image_path:={goal_file[0]}', '-p', 'diagnostics_period:=0.2']
    harness = Harness()
    # A goal image latched before the node starts must still reach it.
    latched_pub = harness.node.create_publisher(Image, TOPICS['goal_image_topic'],
                                                common.LATCHED_QOS)
    latched_rgb = _test_image(36, 36)
    latched_msg, _ = harness.image_msg(array_to_image(latched_rgb, 'rgb8'), 'latched_goal')
    latched_pub.publish(latched_msg)
    harness.latched_goal = (latched_msg, latched_rgb)
    with open(log_path, 'w') as log:
        process = subprocess.Popen(args, env=nodes.node_env(), stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        assert harness.goal_client.wait_for_service(timeout_sec=30.0), \
            'perception_node did not start: ' + log_path.read_text()
        assert harness.wait_for(
            lambda: harness.node.count_publishers(TOPICS['latent_topic']) > 0)
        harness.process = process
        yield harness
    finally:
        harness.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        print(log_path.read_text())


def test_model_info_is_latched(perception, checkpoint):
    assert perception.wait_for(lambda: perception.model_info is not None)
    info = perception.model_info
    config = json.loads((checkpoint / 'config.json').read_text())
    assert info['sha256'] == config['weights']['sha256']
    assert info['latent_dim'] == 64
    assert info['image_size'] == 224
    assert info['joint_names'] == JOINTS
    assert info['data_fingerprint'] == 'test-fingerprint'
    assert info['checkpoint'] == str(checkpoint)
    assert info['frameskip'] == 5
    assert info['history'] == 3
    assert info['action_dim'] == 3


def _goal_latents(harness, frame_id: str) -> list:
    return [msg for msg in harness.goal_latents if msg.header.frame_id == frame_id]


def test_goal_from_file_at_start(perception, goal_file, checkpoint):
    # The latched goal latent keeps only the newest goal, and the goal latched before the
    # start replaces this one, so the start-up encoding is checked in the log and counters.
    # test_encode_goal_file_service compares the latent of the same file.
    assert perception.wait_for(lambda: perception.diagnostics.get('goals_encoded', 0) >= 2)
    log = (checkpoint.parent / 'perception.log').read_text()
    assert f'goal latent published from {goal_file[0]} (50x40)' in log


def test_goal_latched_before_start(perception, reference):
    msg, rgb = perception.latched_goal
    assert perception.wait_for(lambda: _goal_latents(perception, 'latched_goal'))
    latent_msg = _goal_latents(perception, 'latched_goal')[0]
    assert latent_msg.header.stamp == msg.header.stamp
    np.testing.assert_allclose(common.msg_to_latent(latent_msg), reference(rgb), atol=1e-4)


def _grey_image() -> np.ndarray:
    grey = _test_image()[:, :, 0].copy()
    grey[0, 0], grey[0, 1] = 0, 255
    return grey


def _cases():
    """(name, fields, expected RGB) for every encoding, with padded rows and byte orders."""
    rgb = _test_image()
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    grey = _grey_image()
    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    depth = grey.astype(np.float32) / 255.0 * 2.0 + 0.5
    yield 'rgb8', array_to_image(rgb, 'rgb8'), rgb
    yield 'rgb8 padded', array_to_image(rgb, 'rgb8', step=64 * 3 + 8), rgb
    yield 'bgr8', array_to_image(rgb[:, :, ::-1], 'bgr8', step=64 * 3 + 1), rgb
    yield 'rgba8', array_to_image(np.concatenate([rgb, alpha], 2), 'rgba8'), rgb
    yield 'bgra8', array_to_image(np.concatenate([rgb[:, :, ::-1], alpha], 2), 'bgra8'), rgb
    yield '8UC3', array_to_image(rgb[:, :, ::-1], '8UC3'), rgb
    yield 'mono8', array_to_image(grey, 'mono8', step=70), grey_rgb
    yield '8UC1', array_to_image(grey, '8UC1'), grey_rgb
    wide = grey.astype(np.uint16) * 257
    yield 'mono16 big-endian', array_to_image(wide, 'mono16', is_bigendian=True), grey_rgb
    yield '16UC1 padded', array_to_image(wide, '16UC1', step=64 * 2 + 6), grey_rgb
    yield '32FC1', array_to_image(depth, '32FC1'), grey_rgb
    yield '32FC1 big-endian padded', array_to_image(depth, '32FC1', step=64 * 4 + 4,
                                                    is_bigendian=True), grey_rgb


@pytest.mark.parametrize('name', [case[0] for case in _cases()])
def test_each_encoding_matches_model(perception, reference, name):
    _, fields, expected = next(case for case in _cases() if case[0] == name)
    latent = perception.encode(fields)
    assert latent.shape == (64,)
    np.testing.assert_allclose(latent, reference(expected), atol=1e-4)


def test_best_effort_camera_is_received(perception, reference):
    rgb = _test_image()
    latent = perception.encode(array_to_image(rgb, 'rgb8'), best_effort=True)
    np.testing.assert_allclose(latent, reference(rgb), atol=1e-4)


def test_goal_image_topic(perception, reference):
    rgb = _test_image(30, 30)
    msg, _ = perception.image_msg(array_to_image(rgb[:, :, ::-1], 'bgr8'), 'topic_goal')
    perception.goal_pub.publish(msg)
    assert perception.wait_for(lambda: _goal_latents(perception, 'topic_goal'))
    latent_msg = _goal_latents(perception, 'topic_goal')[-1]
    assert latent_msg.header.stamp == msg.header.stamp
    np.testing.assert_allclose(common.msg_to_latent(latent_msg), reference(rgb), atol=1e-4)


def test_encode_goal_file_service(perception, goal_file, reference):
    count = len(_goal_latents(perception, ''))
    future = perception.goal_client.call_async(Trigger.Request())
    assert perception.wait_for(future.done)
    assert future.result().success, future.result().message
    assert str(goal_file[0]) in future.result().message
    assert perception.wait_for(lambda: len(_goal_latents(perception, '')) > count)
    np.testing.assert_allclose(common.msg_to_latent(_goal_latents(perception, '')[-1]),
                               reference(goal_file[1]), atol=1e-4)


def test_malformed_image_is_skipped(perception, reference):
    fields = array_to_image(_test_image(), 'rgb8')
    fields.data = fields.data[:-10]
    bad, key = perception.image_msg(fields)
    perception.image_pub.publish(bad)
    assert perception.wait_for(lambda: perception.diagnostics.get('frames_invalid', 0) >= 1)
    unknown = array_to_image(_test_image(), 'rgb8')
    unknown.encoding = 'yuv422'
    perception.image_pub.publish(perception.image_msg(unknown)[0])
    assert perception.wait_for(lambda: perception.diagnostics.get('frames_invalid', 0) >= 2)
    assert key not in perception.latents
    # The node keeps running and encodes the next valid frame.
    rgb = _test_image()
    np.testing.assert_allclose(perception.encode(array_to_image(rgb, 'rgb8')), reference(rgb),
                               atol=1e-4)


def test_flood_drops_frames_with_bounded_memory(perception, reference):
    frames = 150
    rgb = np.ascontiguousarray(RNG.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    fields = array_to_image(rgb, 'rgb8')
    perception.wait_for(lambda: perception.diagnostics.get('frames_received', 0) > 0)
    before = dict(perception.diagnostics)
    rss_before = _rss_mib(perception.process.pid)
    keys = []
    for _ in range(frames):
        msg, key = perception.image_msg(fields)
        perception.image_pub.publish(msg)
        keys.append(key)
        perception.executor.spin_once(timeout_sec=0)

    # After the flood the node is idle again at once: a new frame is encoded, no backlog.
    last = _test_image()
    np.testing.assert_allclose(perception.encode(array_to_image(last, 'rgb8')), reference(last),
                               atol=1e-4)
    rss_after = _rss_mib(perception.process.pid)
    perception.wait_for(lambda: False, timeout=0.5)
    after = perception.diagnostics
    received = after['frames_received'] - before['frames_received']
    encoded = after['frames_encoded'] - before['frames_encoded']
    dropped = after['frames_dropped'] - before['frames_dropped']
    assert received > 10, f'only {received} of {frames} flood frames arrived'
    assert dropped > 0
    # Every received frame was either encoded or replaced in the slot; none is waiting.
    assert encoded + dropped == received
    assert sum(key in perception.latents for key in keys) < frames
    # 150 frames of 0.9 MiB each would add about 130 MiB if they were queued.
    assert rss_after - rss_before < 60, (rss_before, rss_after)
