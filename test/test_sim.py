"""Tests of ArmEnv and the exploration policies against real MuJoCo with EGL rendering."""

import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

from lewm_ros.sim import ArmEnv, make_policy, POLICIES  # noqa: E402

JOINTS = ['base_yaw', 'shoulder_pitch', 'elbow_pitch']


@pytest.fixture(scope='module')
def env():
    arm = ArmEnv(image_size=64, seed=0)
    yield arm
    arm.close()


def _run(env, actions):
    frames, qpos = [], []
    for action in actions:
        env.step(action)
        frames.append(env.render())
        qpos.append(env.qpos)
    return np.stack(frames), np.stack(qpos)


def test_env_metadata(env):
    assert env.joint_names == JOINTS
    np.testing.assert_allclose(env.joint_limits, [[-2.6, 2.6], [-1.5, 1.5], [-2.2, 2.2]])
    assert env.control_period == pytest.approx(0.1)
    assert env.substeps == 50
    # Default step bound: URDF velocity limit times the control period.
    np.testing.assert_allclose(env.max_delta, [0.2, 0.15, 0.2])


def test_env_zero_pose_forward_kinematics(env):
    env.reset(qpos=[0, 0, 0])
    # Base 0.06 + turret 0.10 + upper arm 0.22 + tool 0.225 above the table.
    np.testing.assert_allclose(env.ee_position(), [0, 0, 0.605], atol=1e-9)
    # Yaw a quarter turn, arm straight and tilted by 1 rad: +x of the turret is world +y.
    env.reset(qpos=[np.pi / 2, 1.0, 0])
    expected = [0, 0.445 * np.sin(1.0), 0.16 + 0.445 * np.cos(1.0)]
    np.testing.assert_allclose(env.ee_position(), expected, atol=1e-9)
    # ee_position_at computes the same without moving the arm.
    env.reset(qpos=[0, 0, 0])
    np.testing.assert_allclose(env.ee_position_at([np.pi / 2, 1.0, 0]), expected, atol=1e-9)
    np.testing.assert_allclose(env.ee_position(), [0, 0, 0.605], atol=1e-9)


def test_env_deterministic_for_seed(env):
    rng = np.random.default_rng(3)
    actions = rng.uniform(-0.2, 0.2, size=(15, 3))
    env.reset(seed=11)
    start = env.qpos
    frames_a, qpos_a = _run(env, actions)
    env.reset(seed=11)
    np.testing.assert_array_equal(env.qpos, start)
    frames_b, qpos_b = _run(env, actions)
    np.testing.assert_array_equal(qpos_a, qpos_b)
    np.testing.assert_array_equal(frames_a, frames_b)
    env.reset(seed=12)
    assert not np.allclose(env.qpos, start)


def test_env_tracks_targets(env):
    env.reset(qpos=[0.0, 0.3, 0.6])
    target = np.array([0.5, 0.6, 1.0])
    for _ in range(15):
        env.step(np.clip(target - env.q_cmd, -env.max_delta, env.max_delta))
    np.testing.assert_allclose(env.q_cmd, target, atol=1e-12)
    for _ in range(5):
        env.step(np.zeros(3))
    np.testing.assert_allclose(env.qpos, target, atol=0.01)
    assert np.all(np.abs(env.qvel) < 0.05)


def test_env_image_changes_only_with_motion(env):
    env.reset(qpos=[0.3, 0.4, 0.8])
    first = env.render()
    assert first.shape == (64, 64, 3)
    assert first.dtype == np.uint8
    env.step(np.zeros(3))
    np.testing.assert_array_equal(env.render(), first)
    np.testing.assert_array_equal(env.render(), first)
    for joint in range(3):
        action = np.zeros(3)
        action[joint] = 0.1
        before = env.render()
        env.step(action)
        after = env.render()
        changed = np.any(after != before, axis=-1).sum()
        assert changed >= 5, f'{JOINTS[joint]} moved but only {changed} pixels changed'


def test_env_configurations_look_different(env):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(6):
        env.reset(qpos=env.sample_configuration(rng))
        frames.append(env.render().astype(int))
    for i in range(len(frames)):
        for j in range(i):
            assert np.abs(frames[i] - frames[j]).sum(axis=-1).astype(bool).sum() > 20


def test_env_camera_sees_whole_arm(env):
    rng = np.random.default_rng(5)
    for _ in range(300):
        env.reset(qpos=env.sample_configuration(rng))
        for body in ('turret_link', 'upper_arm_link', 'forearm_link', 'tool_link'):
            u, v = env.camera_pixel(env.data.body(body).xpos)
            assert 2 <= u <= 62, (body, env.qpos, u)
            assert 2 <= v <= 62, (body, env.qpos, v)
    # The projection agrees with the renderer: the tool ball is blue where it projects.
    env.reset(qpos=[0, 0, 0])
    u, v = np.round(env.camera_pixel(env.ee_position())).astype(int)
    red, green, blue = env.render()[v, u].astype(int)
    assert blue > red + 50
    assert blue > green + 50


def test_env_actions_respect_limits(env):
    env.reset(qpos=[2.5, 1.4, -2.1])
    applied = env.step([5.0, 5.0, -5.0])
    np.testing.assert_allclose(applied, [0.1, 0.1, -0.1], atol=1e-12)
    np.testing.assert_allclose(env.q_cmd, [2.6, 1.5, -2.2])
    rng = np.random.default_rng(1)
    low, high = env.joint_limits[:, 0], env.joint_limits[:, 1]
    for _ in range(100):
        before = env.q_cmd
        applied = env.step(rng.uniform(-1, 1, size=3))
        assert np.all(np.abs(applied) <= env.max_delta + 1e-12)
        np.testing.assert_allclose(env.q_cmd - before, applied, atol=1e-12)
        assert np.all(env.q_cmd >= low)
        assert np.all(env.q_cmd <= high)


def test_env_rejects_bad_input(env):
    with pytest.raises(ValueError, match='NaN'):
        env.step([np.nan, 0, 0])
    with pytest.raises(ValueError, match='3 joint deltas'):
        env.step([0.1, 0.1])
    with pytest.raises(ValueError, match='outside the limits'):
        env.reset(qpos=[0, 2.0, 0])
    with pytest.raises(ValueError, match='multiple'):
        ArmEnv(control_period=0.1, timestep=0.003)


def test_render_goal_leaves_state(env):
    env.reset(qpos=[0.2, 0.5, 0.9])
    env.step([0.1, -0.1, 0.1])
    qpos, qvel, q_cmd, time = env.qpos, env.qvel, env.q_cmd, env.time
    full_state = env.data.qpos.copy()
    current = env.render()
    goal = env.render_goal([-1.0, 0.8, 1.2])
    assert np.any(goal != current)
    np.testing.assert_array_equal(env.qpos, qpos)
    np.testing.assert_array_equal(env.qvel, qvel)
    np.testing.assert_array_equal(env.q_cmd, q_cmd)
    np.testing.assert_array_equal(env.data.qpos, full_state)
    assert env.time == time
    np.testing.assert_array_equal(env.render(), current)
    # The goal image of the current configuration is the current camera frame.
    np.testing.assert_array_equal(env.render_goal(env.qpos), current)


def test_goal_marker_hidden_by_default():
    hidden = ArmEnv(image_size=64)
    shown = ArmEnv(image_size=64, show_goal_marker=True)
    try:
        for arm in (hidden, shown):
            arm.reset(qpos=[0, 0, 0])
            arm.set_goal_marker([0.25, -0.15, 0.2])
        plain = hidden.render()
        hidden.set_goal_marker([0.0, 0.0, -1.0])
        np.testing.assert_array_equal(hidden.render(), plain)
        assert np.any(shown.render() != plain)
    finally:
        hidden.close()
        shown.close()


def test_env_renders_224():
    arm = ArmEnv(image_size=224)
    try:
        frame = arm.render()
        assert frame.shape == (224, 224, 3)
        assert frame.std() > 10
    finally:
        arm.close()


def test_policies_by_name(env):
    assert set(POLICIES) == {'waypoint', 'random_delta'}
    with pytest.raises(ValueError, match='unknown exploration policy'):
        make_policy('brownian')
    for name in POLICIES:
        policy = make_policy(name)
        env.reset(seed=0)
        policy.reset(env, np.random.default_rng(0))
        for _ in range(20):
            action = policy.act(env)
            assert action.shape == (3,)
            assert np.all(np.abs(action) <= env.max_delta + 1e-12)
            env.step(action)


def test_waypoint_policy_covers_workspace(env):
    policy = make_policy('waypoint')
    rng = np.random.default_rng(0)
    visited = []
    for _ in range(4):
        env.reset(seed=int(rng.integers(1000)))
        policy.reset(env, rng)
        for _ in range(100):
            env.step(policy.act(env))
            visited.append(env.qpos)
    visited = np.array(visited)
    low, high = env.joint_limits[:, 0], env.joint_limits[:, 1]
    for joint in range(3):
        bins = np.linspace(low[joint], high[joint], 11)
        counts, _ = np.histogram(visited[:, joint], bins)
        # Shoulder and elbow extremes are partly blocked by the table, so not every bin is
        # reachable from every start; most of each range is.
        assert np.count_nonzero(counts) >= 7, (JOINTS[joint], counts)
        span = visited[:, joint].max() - visited[:, joint].min()
        assert span > 0.6 * (high[joint] - low[joint]), JOINTS[joint]
    # The end effector reaches far from the base and down near the table.
    ee_radius = []
    for q in visited[::10]:
        env.reset(qpos=q)
        ee_radius.append(np.linalg.norm(env.ee_position()[:2]))
    assert max(ee_radius) > 0.3


def test_env_render_without_antialias():
    smooth = ArmEnv(image_size=64)
    jagged = ArmEnv(image_size=64, antialias=False)
    try:
        for arm in (smooth, jagged):
            arm.reset(qpos=[0.3, 1.0, 1.0])
        smooth_frame, jagged_frame = smooth.render(), jagged.render()
        assert np.any(smooth_frame != jagged_frame)
        # Multisampling blends edge pixels, which adds colours that a single sample lacks.
        smooth_colours = len(np.unique(smooth_frame.reshape(-1, 3), axis=0))
        jagged_colours = len(np.unique(jagged_frame.reshape(-1, 3), axis=0))
        assert smooth_colours > jagged_colours
        np.testing.assert_array_equal(jagged.render(), jagged_frame)
    finally:
        smooth.close()
        jagged.close()
