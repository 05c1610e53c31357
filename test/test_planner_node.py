"""Tests of planner_node running as a separate process, fed latents over DDS on loopback.

The test saves a small untrained checkpoint, plays perception (model info, latents, goal
latent) and the robot (joint states) itself, and checks what the planner publishes.
"""

import contextlib
import json
import os
from pathlib import Path
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Header, String
from trajectory_msgs.msg import JointTrajectory

from lewm_ros.nodes import common

pytestmark = pytest.mark.ros

JOINTS = ['base_yaw', 'shoulder_pitch', 'elbow_pitch']
POSITIONS = np.array([0.1, 0.3, 0.9])
BOUND = np.array([0.05, 0.04, 0.03])  # action_bound, rad per control step
HORIZON = 2
FRAMESKIP = 5
PERIOD = 0.1


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> tuple[Path, str, int]:
    """Save an untrained small-preset checkpoint; return its path, sha256 and latent size."""
    import torch

    from lewm_ros.model import LeWM, ModelConfig, read_checkpoint_config, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig.preset('small', encoder_depth=1, predictor_depth=1,
                                joint_names=JOINTS, action_std=[0.05] * 3,
                                data_fingerprint='planner-test-data')
    directory = save_checkpoint(LeWM(config).eval(), tmp_path_factory.mktemp('ckpt') / 'tiny')
    sha = read_checkpoint_config(directory)['weights']['sha256']
    return directory, sha, config.latent_dim


def test_latent_history_window_known_answer():
    from lewm_ros.nodes.planner_node import LatentHistory

    history = LatentHistory(history=3, frameskip=2)
    for step in range(10, 15):
        history.add_latent(step, np.full(4, float(step)))
    # A plan observed at step 10 and published while step 11 was the newest frame: its target
    # for step 10 had passed and is not recorded.
    history.record_targets(10, np.array([[1.0], [2.0], [4.0], [7.0], [11.0]]), from_step=11)
    assert sorted(history.targets) == [11, 12, 13, 14]
    # Step 14: latents 14 and 12 and the actions of steps 12 and 13 are known. The block before
    # step 12 needs the target of step 10, which is missing.
    latents, actions = history.window(14)
    assert latents[:, 0].tolist() == [12.0, 14.0]
    assert actions[:, 0].tolist() == [2.0, 3.0]
    # With the targets of steps 9 and 10 known, the full history of three latents is available.
    history.targets[9] = np.array([0.0])
    history.targets[10] = np.array([1.0])
    latents, actions = history.window(14)
    assert latents[:, 0].tolist() == [10.0, 12.0, 14.0]
    assert actions[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0]
    # Without the latent of step 13 - 2 = 11 only one latent is returned for step 13.
    del history.latents[11]
    latents, actions = history.window(13)
    assert latents.shape == (1, 4)
    assert actions is None


class PlannerProbe:
    """Test-side node: publishes perception and robot messages, records plans and diagnostics."""

    def __init__(self, namespace: str = '/'):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('planner_probe', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        node = self.node
        self.latent_pub = node.create_publisher(Image, 'lewm/latent', common.RELIABLE_QOS)
        self.goal_pub = node.create_publisher(Image, 'lewm/goal_latent', common.LATCHED_QOS)
        self.info_pub = node.create_publisher(String, 'lewm/model_info', common.LATCHED_QOS)
        self.joint_pub = node.create_publisher(JointState, 'joint_states', common.RELIABLE_QOS)
        self.plans, self.surprises, self.diagnostics = [], [], []
        node.create_subscription(JointTrajectory, 'lewm/plan', self.plans.append,
                                 common.RELIABLE_QOS)
        node.create_subscription(Float64, 'lewm/surprise', self.surprises.append,
                                 common.RELIABLE_QOS)
        node.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics,
                                 common.RELIABLE_QOS)
        self.rng = np.random.default_rng(0)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith('planner_node'):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def counter(self, name: str) -> int:
        return int(self.diagnostics[-1][name]) if self.diagnostics else 0

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def spin_until(self, condition, timeout: float) -> bool:
        """Spin at least once, then until ``condition()`` or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False

    def step_header(self, step: int) -> Header:
        """Return a header stamped at control step ``step`` (``step * PERIOD`` seconds)."""
        header = Header(frame_id='camera_optical_frame')
        header.stamp.sec, header.stamp.nanosec = divmod(int(round(step * PERIOD * 1e9)),
                                                        1_000_000_000)
        return header

    def now_step(self) -> int:
        return int(round(self.node.get_clock().now().nanoseconds * 1e-9 / PERIOD))

    def publish_info(self, sha: str, latent_dim: int) -> None:
        self.info_pub.publish(String(data=json.dumps(
            {'latent_dim': latent_dim, 'sha256': sha, 'data_fingerprint': 'planner-test-data'})))

    def stream(self, dim: int, seconds: float, age: float = 0.0, condition=None) -> None:
        """Publish latents of size ``dim`` and joint states at the control rate.

        Stamps are consecutive control steps, like those of a camera at the control rate, and
        ``age`` seconds older than the wall clock.
        """
        start = time.monotonic()
        first_step = self.now_step() - int(round(age / PERIOD))
        for i in range(int(round(seconds / PERIOD))):
            latent = self.rng.normal(size=dim).astype(np.float32)
            self.latent_pub.publish(common.latent_to_msg(latent,
                                                         self.step_header(first_step + i)))
            state = JointState(name=JOINTS, position=POSITIONS.tolist())
            state.header = self.step_header(self.now_step())
            self.joint_pub.publish(state)
            wait = start + (i + 1) * PERIOD - time.monotonic()
            if self.spin_until(condition or (lambda: False), max(0.0, wait)):
                return


@contextlib.contextmanager
def running_planner(checkpoint, tmp_path: Path, namespace: str = '/', **overrides):
    """Start planner_node under ``namespace`` with test settings; yield its probe and log."""
    directory, sha, dim = checkpoint
    params = {
        'model': str(directory), 'action_bound': '[' + ', '.join(map(str, BOUND)) + ']',
        'samples': 32, 'elites': 4, 'iterations': 3, 'horizon': HORIZON,
        'replan_every_steps': FRAMESKIP, 'max_latent_age': 0.5, 'diagnostics_period': 0.2,
    }
    params.update(overrides)
    args = [sys.executable, '-m', 'lewm_ros.nodes.planner_node', '--ros-args',
            '-r', f'__ns:={namespace}']
    for key, value in params.items():
        args += ['-p', f'{key}:={value}']
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    log_path = tmp_path / 'planner.log'
    process = subprocess.Popen(args, env=env, stdout=open(log_path, 'w'),
                               stderr=subprocess.STDOUT)
    probe = PlannerProbe(namespace)
    try:
        ready = probe.spin_until(lambda: probe.diagnostics or process.poll() is not None, 60)
        assert ready and process.poll() is None, log_path.read_text()
        probe.goal_pub.publish(common.latent_to_msg(np.zeros(dim, np.float32), Header()))
        yield probe, log_path
    finally:
        probe.close()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope='module')
def planner(checkpoint, tmp_path_factory):
    with running_planner(checkpoint, tmp_path_factory.mktemp('planner')) as (probe, log_path):
        yield probe, checkpoint[1], checkpoint[2], log_path


def test_planner_rejects_latents_before_model_info(planner):
    probe, sha, dim, _ = planner
    probe.stream(dim, 1.0)
    probe.spin_until(lambda: probe.counter('rejected_no_model_info') >= 5, 2)
    assert probe.counter('rejected_no_model_info') >= 5
    assert probe.plans == []


def test_planner_rejects_other_model(planner):
    probe, sha, dim, _ = planner
    probe.publish_info('0' * 64, dim)
    probe.spin_until(lambda: False, 0.5)
    probe.stream(dim, 1.0)
    probe.spin_until(lambda: probe.counter('rejected_model') >= 5, 2)
    assert probe.counter('rejected_model') >= 5
    assert probe.plans == []


def test_planner_rejects_wrong_size(planner):
    probe, sha, dim, _ = planner
    probe.publish_info(sha, dim)
    probe.spin_until(lambda: False, 0.5)
    probe.stream(dim + 3, 1.0)
    probe.spin_until(lambda: probe.counter('rejected_size') >= 5, 2)
    assert probe.counter('rejected_size') >= 5
    assert probe.plans == []


def test_planner_rejects_stale_latents(planner):
    probe, sha, dim, _ = planner
    probe.stream(dim, 1.0, age=2.0)
    probe.spin_until(lambda: probe.counter('rejected_stale') >= 5, 2)
    assert probe.counter('rejected_stale') >= 5
    assert probe.plans == []
    assert probe.counter('plans') == 0


def test_planner_publishes_plan_within_bounds(planner):
    probe, sha, dim, log_path = planner
    probe.stream(dim, 15.0, condition=lambda: len(probe.plans) >= 3)
    assert len(probe.plans) >= 3, log_path.read_text()[-3000:]
    for plan in probe.plans:
        assert list(plan.joint_names) == JOINTS
        assert len(plan.points) == HORIZON * FRAMESKIP
        times = [p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in plan.points]
        assert np.allclose(times, PERIOD * np.arange(1, HORIZON * FRAMESKIP + 1))
        targets = np.array([p.positions for p in plan.points])
        steps = np.diff(np.vstack([POSITIONS, targets]), axis=0)
        assert np.all(np.abs(steps) <= BOUND + 1e-6), f'steps {steps} exceed {BOUND}'
        # The plan is stamped with its observation: a stamp on the control-step grid.
        stamp = common.stamp_to_seconds(plan.header.stamp)
        assert abs(stamp / PERIOD - round(stamp / PERIOD)) < 1e-3

    # Plans come every replan_every_steps control steps. The test's wall-clock stream may skip
    # a step of the stamp grid now and then, and that delays a plan by one step.
    stamps = np.array([common.stamp_to_seconds(p.header.stamp) for p in probe.plans])
    intervals = np.round(np.diff(stamps) / PERIOD)
    assert np.all(intervals >= FRAMESKIP), intervals
    assert np.all(intervals <= FRAMESKIP + 2), intervals


def test_planner_publishes_surprise_and_diagnostics(planner):
    probe, sha, dim, _ = planner
    # Four surprises mean five plans in a row from one stream of consecutive stamps.
    probe.stream(dim, 10.0, condition=lambda: len(probe.surprises) >= 4)
    assert len(probe.surprises) >= 4
    assert all(np.isfinite(s.data) and s.data >= 0 for s in probe.surprises)
    probe.stream(dim, 0.6)
    last = probe.diagnostics[-1]
    assert int(last['plans']) >= 3
    assert float(last['plan_latency_ms']) > 0
    assert np.isfinite(float(last['predicted_distance']))
    # Once consecutive plans have recorded their targets, a plan sees the full history of the
    # checkpoint: 3 latents and the commanded actions between them.
    assert int(last['latents_in_last_plan']) == 3
    # Streams that were rejected earlier are still counted.
    assert int(last['rejected_stale']) >= 5


def test_planner_hold_keeps_joint_positions(checkpoint, tmp_path):
    # With a margin of 0.99 an optimised plan replaces holding still only when it promises to
    # cut the cost a hundredfold, which random latents never allow. So every plan keeps the
    # joints where they are.
    directory, sha, dim = checkpoint
    with running_planner(checkpoint, tmp_path, namespace='/hold',
                         hold_margin=0.99) as (probe, log_path):
        probe.publish_info(sha, dim)
        probe.stream(dim, 10.0, condition=lambda: len(probe.plans) >= 2)
        assert len(probe.plans) >= 2, log_path.read_text()[-3000:]
        for plan in probe.plans:
            targets = np.array([p.positions for p in plan.points])
            assert np.array_equal(targets, np.tile(POSITIONS, (len(targets), 1)))
        probe.spin_until(lambda: probe.counter('plans') >= 2, 2.0)
        assert probe.counter('plans_held') == probe.counter('plans') >= 2


def test_planner_mppi_plan_within_bounds(checkpoint, tmp_path):
    directory, sha, dim = checkpoint
    with running_planner(checkpoint, tmp_path, namespace='/mppi', optimizer='mppi',
                         temperature=0.5, noise_std=0.5) as (probe, log_path):
        probe.publish_info(sha, dim)
        probe.stream(dim, 10.0, condition=lambda: len(probe.plans) >= 2)
        assert len(probe.plans) >= 2, log_path.read_text()[-3000:]
        for plan in probe.plans:
            targets = np.array([p.positions for p in plan.points])
            steps = np.diff(np.vstack([POSITIONS, targets]), axis=0)
            assert np.all(np.abs(steps) <= BOUND + 1e-6), f'steps {steps} exceed {BOUND}'
        assert 'mppi with 32 samples' in log_path.read_text()
