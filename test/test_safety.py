"""Tests of lewm_ros.safety.SafetyFilter, driven tick by tick with explicit times."""

import math

import numpy as np
import pytest

from lewm_ros import safety
from lewm_ros.safety import SafetyConfig, SafetyFilter
from lewm_ros.urdf_limits import JointLimit

NAMES = ['j1', 'j2', 'j3']
LOWER = np.array([-1.0, -0.5, -2.0])
UPPER = np.array([1.0, 0.5, 2.0])
DT = 0.1


def make_filter(**settings) -> SafetyFilter:
    values = dict(joint_names=NAMES, lower=LOWER, upper=UPPER, max_velocity=[1.0, 1.0, 0.5],
                  control_period=DT, max_step=0.05, plan_timeout=0.5, state_timeout=0.3,
                  auto_enable=True)
    values.update(settings)
    return SafetyFilter(SafetyConfig(**values))


def plan_to(flt, target, now, names=NAMES, steps=5, stamp=None):
    times = DT * np.arange(1, steps + 1)
    positions = np.tile(np.asarray(target, dtype=float), (steps, 1))
    return flt.update_plan(names, times, positions, now if stamp is None else stamp, now)


def test_step_limit_takes_smaller_bound():
    config = make_filter().config
    # j3: 0.5 rad/s * 0.1 s = 0.05; others limited by max_step 0.05 -> all 0.05.
    np.testing.assert_allclose(config.step_limit, [0.05, 0.05, 0.05])
    config = make_filter(max_step=1.0).config
    np.testing.assert_allclose(config.step_limit, [0.1, 0.1, 0.05])


def test_starts_disabled_without_auto_enable():
    flt = make_filter(auto_enable=False)
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    assert flt.state == safety.DISABLED
    assert not plan_to(flt, [0.5, 0, 0], 1.0)
    assert flt.counters['plan_ignored_not_enabled'] == 1
    command = flt.step(1.0)
    assert command.positions is None
    assert command.reason == safety.NOT_ENABLED


def test_no_command_before_first_joint_state():
    flt = make_filter()
    command = flt.step(0.0)
    assert command.positions is None
    assert command.reason == safety.NO_STATE


def test_follows_plan_with_rate_limit():
    flt = make_filter(max_step=1.0)
    assert flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    assert plan_to(flt, [0.3, -0.3, 0.3], 1.0)
    outputs = []
    for k in range(4):
        now = 1.0 + k * DT
        flt.update_joint_state(NAMES, [0, 0, 0], now, now)
        command = flt.step(now)
        assert command.reason == safety.FOLLOW
        outputs.append(command.positions)
    # j1/j2 move 0.1 per tick up to 0.3; j3 is velocity-limited to 0.05 per tick.
    np.testing.assert_allclose(outputs[0], [0.1, -0.1, 0.05])
    np.testing.assert_allclose(outputs[2], [0.3, -0.3, 0.15])
    np.testing.assert_allclose(outputs[3], [0.3, -0.3, 0.2])
    assert flt.counters['step_limited'] == 4


def test_plan_reordered_by_joint_name():
    flt = make_filter(max_step=10.0, max_velocity=[100.0] * 3)
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    # Targets named in a different order; an extra joint is ignored.
    assert flt.update_plan(['j3', 'gripper', 'j1', 'j2'], [0.05], [[0.3, 9.0, 0.1, 0.2]],
                           1.0, 1.0)
    np.testing.assert_allclose(flt.step(1.0).positions, [0.1, 0.2, 0.3])


def test_interpolates_between_knots():
    flt = make_filter(max_step=10.0, max_velocity=[100.0] * 3, lookahead=0.0, state_timeout=1.0)
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    flt.update_plan(NAMES, [0.2, 0.4], [[0.2, 0.0, 0.0], [0.6, 0.0, 0.0]], 1.0, 1.0)
    # From the hand-over position 0 at t=0 to 0.2 at t=0.2, then 0.6 at t=0.4.
    assert flt.step(1.1).positions[0] == pytest.approx(0.1)
    assert flt.step(1.3).positions[0] == pytest.approx(0.4)
    assert flt.step(1.45).positions[0] == pytest.approx(0.6)


def test_clamps_to_position_limits():
    flt = make_filter(max_step=10.0, max_velocity=[100.0] * 3)
    flt.update_joint_state(NAMES, [0.9, 0.4, 0], 1.0, 1.0)
    plan_to(flt, [5.0, -5.0, 0.0], 1.0)
    command = flt.step(1.0)
    np.testing.assert_allclose(command.positions, [1.0, -0.5, 0.0])
    assert flt.counters['position_clamped'] == 1


def test_robot_outside_limits_is_brought_inside():
    flt = make_filter()
    flt.update_joint_state(NAMES, [1.5, 0, 0], 1.0, 1.0)
    command = flt.step(1.0)
    assert command.reason == safety.HOLD_NO_PLAN
    np.testing.assert_allclose(command.positions, [1.0, 0, 0])


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_nonfinite_plan_rejected(bad):
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    assert not plan_to(flt, [0.1, bad, 0.0], 1.0)
    assert flt.counters['plan_rejected_nonfinite'] == 1
    assert not flt.update_plan(NAMES, [bad], [[0, 0, 0]], 1.0, 1.0)
    assert flt.counters['plan_rejected_nonfinite'] == 2
    assert not flt.has_plan
    command = flt.step(1.0)
    assert command.reason == safety.HOLD_NO_PLAN
    np.testing.assert_array_equal(command.positions, [0, 0, 0])


def test_nonfinite_state_rejected():
    flt = make_filter()
    assert flt.update_joint_state(NAMES, [0.2, 0, 0], 1.0, 1.0)
    assert not flt.update_joint_state(NAMES, [math.nan, 0, 0], 1.05, 1.05)
    assert flt.counters['state_rejected_nonfinite'] == 1
    np.testing.assert_array_equal(flt.measured, [0.2, 0, 0])


def test_malformed_plans_rejected():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    assert not flt.update_plan(['j1', 'j2'], [0.1], [[0, 0]], 1.0, 1.0)
    assert flt.counters['plan_rejected_joints'] == 1
    assert not flt.update_plan(['j1', 'j1', 'j2', 'j3'], [0.1], [[0, 0, 0, 0]], 1.0, 1.0)
    assert flt.counters['plan_rejected_joints'] == 2
    assert not flt.update_plan(NAMES, [0.2, 0.1], [[0, 0, 0], [0, 0, 0]], 1.0, 1.0)
    assert not flt.update_plan(NAMES, [0.1], [[0, 0]], 1.0, 1.0)
    assert not flt.update_plan(NAMES, [], [], 1.0, 1.0)
    assert not flt.update_plan(NAMES, [-0.1], [[0, 0, 0]], 1.0, 1.0)
    assert flt.counters['plan_rejected_malformed'] == 4
    assert not flt.update_joint_state(NAMES, [0, 0], 1.0, 1.0)
    assert flt.counters['state_rejected_malformed'] == 1
    assert not flt.update_joint_state(['j1', 'j2', 'x'], [0, 0, 0], 1.0, 1.0)
    assert flt.counters['state_rejected_joints'] == 1


def test_old_plan_rejected_on_arrival():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 2.0, 2.0)
    assert not plan_to(flt, [0.1, 0, 0], now=2.0, stamp=1.0)
    assert flt.counters['plan_rejected_stale'] == 1
    # Zero stamp means "now".
    assert plan_to(flt, [0.1, 0, 0], now=2.0, stamp=0.0)


def test_stale_plan_holds_last_command():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    plan_to(flt, [0.5, 0, 0], 1.0, steps=20)
    now = 1.0
    last = None
    while now < 1.45:
        flt.update_joint_state(NAMES, [0, 0, 0], now, now)
        command = flt.step(now)
        assert command.reason == safety.FOLLOW
        last = command.positions
        now += DT
    # Within the 0.5 s timeout the plan is still followed; past it the command freezes.
    for _ in range(3):
        now += DT
        flt.update_joint_state(NAMES, [0, 0, 0], now, now)
        command = flt.step(now)
        assert command.reason in (safety.HOLD_PLAN_STALE, safety.HOLD_NO_PLAN)
        np.testing.assert_array_equal(command.positions, last)
    assert flt.counters['plan_timeouts'] == 1


def test_stale_joint_state_holds():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    plan_to(flt, [0.5, 0, 0], 1.0)
    first = flt.step(1.0).positions
    # No joint state for more than state_timeout (0.3 s): hold, although the plan is fresh.
    command = flt.step(1.35)
    assert command.reason == safety.HOLD_STATE_STALE
    np.testing.assert_array_equal(command.positions, first)
    flt.step(1.4)
    assert flt.counters['state_timeouts'] == 1
    flt.update_joint_state(NAMES, [0, 0, 0], 1.42, 1.42)
    assert flt.step(1.42).reason == safety.FOLLOW


def test_estop_latches_until_enable():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    plan_to(flt, [0.5, 0, 0], 1.0)
    held = flt.step(1.0).positions
    flt.estop()
    assert flt.state == safety.ESTOP
    # New plans are ignored; disable does not clear the latch.
    assert not plan_to(flt, [0.5, 0, 0], 1.1)
    flt.disable()
    assert flt.state == safety.ESTOP
    for k in range(3):
        now = 1.1 + k * DT
        flt.update_joint_state(NAMES, [0, 0, 0], now, now)
        command = flt.step(now)
        assert command.reason == safety.HOLD_ESTOP
        np.testing.assert_array_equal(command.positions, held)
    flt.enable()
    assert flt.state == safety.ENABLED
    assert flt.step(1.4).reason == safety.HOLD_NO_PLAN
    assert plan_to(flt, [0.5, 0, 0], 1.4)
    assert flt.step(1.4).reason == safety.FOLLOW
    assert flt.counters['estops'] == 1


def test_surprise_halts_and_latches():
    flt = make_filter(surprise_threshold=2.0)
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    plan_to(flt, [0.5, 0, 0], 1.0)
    held = flt.step(1.0).positions
    assert flt.update_surprise(1.5, 1.0)
    assert flt.state == safety.ENABLED
    assert not flt.update_surprise(math.nan, 1.0)
    assert flt.state == safety.ENABLED
    assert flt.update_surprise(2.5, 1.05)
    assert flt.state == safety.SURPRISE_HALT
    flt.update_surprise(0.1, 1.08)
    assert flt.state == safety.SURPRISE_HALT
    command = flt.step(1.1)
    assert command.reason == safety.HOLD_SURPRISE
    np.testing.assert_array_equal(command.positions, held)
    assert flt.counters['surprise_halts'] == 1
    assert flt.counters['surprise_rejected_nonfinite'] == 1
    flt.enable()
    assert flt.state == safety.ENABLED


def test_disable_stops_commands_and_enable_restarts_from_measured():
    flt = make_filter()
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    plan_to(flt, [0.5, 0, 0], 1.0)
    flt.step(1.0)
    flt.disable()
    assert flt.step(1.1).positions is None
    # The arm was moved by hand while disabled.
    flt.update_joint_state(NAMES, [0.3, 0, 0], 1.2, 1.2)
    flt.enable()
    np.testing.assert_array_equal(flt.step(1.2).positions, [0.3, 0, 0])


def test_handover_to_new_plan_is_smooth():
    flt = make_filter(max_step=10.0, max_velocity=[100.0] * 3, lookahead=0.0, state_timeout=1.0)
    flt.update_joint_state(NAMES, [0, 0, 0], 1.0, 1.0)
    flt.update_plan(NAMES, [0.1, 0.2], [[0.1, 0, 0], [0.2, 0, 0]], 1.0, 1.0)
    assert flt.step(1.1).positions[0] == pytest.approx(0.1)
    # The replacement plan targets -0.5 at 0.5 s; it starts from the last command 0.1.
    flt.update_plan(NAMES, [0.5], [[-0.5, 0, 0]], 1.1, 1.1)
    outputs = [flt.step(1.1 + k * DT).positions[0] for k in range(1, 6)]
    np.testing.assert_allclose(outputs, [-0.02, -0.14, -0.26, -0.38, -0.5], atol=1e-12)
    assert flt.counters['plans_replaced'] == 1


def test_overrides_only_narrow():
    limits = {name: JointLimit(name, 'revolute', -1.0, 1.0, 2.0, 1.0) for name in NAMES}
    config = SafetyConfig.from_limits(limits, joint_names=['j2', 'j1'],
                                      lower_override=[-0.5, -1.0], velocity_override=[1.0, 2.0])
    assert config.joint_names == ['j2', 'j1']
    np.testing.assert_array_equal(config.lower, [-0.5, -1.0])
    np.testing.assert_array_equal(config.max_velocity, [1.0, 2.0])
    with pytest.raises(ValueError, match='upper_override .* is looser'):
        SafetyConfig.from_limits(limits, upper_override=[2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"joints \['elbow'\] are not movable joints"):
        SafetyConfig.from_limits(limits, joint_names=['elbow'])


def test_invalid_config_rejected():
    with pytest.raises(ValueError, match='exceed upper limits'):
        SafetyConfig(NAMES, [1, 1, 1], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match='neither a velocity limit nor max_step'):
        SafetyConfig(NAMES, LOWER, UPPER, [math.inf] * 3, max_step=math.inf)
    with pytest.raises(ValueError, match='plan_timeout must be a positive'):
        SafetyConfig(NAMES, LOWER, UPPER, [1, 1, 1], plan_timeout=0)
    with pytest.raises(ValueError, match='needs one value or 3 values'):
        SafetyConfig(NAMES, [0, 0], UPPER, [1, 1, 1])


def _random_vector(rng, size):
    """Draw a vector that is sometimes huge, sometimes NaN or inf."""
    values = rng.normal(0.0, rng.choice([0.1, 1.0, 100.0]), size)
    if rng.random() < 0.1:
        values[rng.integers(size)] = rng.choice([math.nan, math.inf, -math.inf])
    return values


@pytest.mark.parametrize('seed', range(20))
def test_random_inputs_never_break_limits(seed):
    rng = np.random.default_rng(seed)
    flt = make_filter(auto_enable=bool(seed % 2), surprise_threshold=3.0,
                      max_step=rng.uniform(0.01, 0.5))
    limit = flt.config.step_limit
    now = 0.0
    previous = None
    commands = 0
    for _ in range(400):
        now += rng.uniform(0.0, 0.2)
        event = rng.random()
        if event < 0.5:
            flt.update_joint_state(NAMES, _random_vector(rng, 3), now - rng.uniform(0, 0.4), now)
        elif event < 0.7:
            steps = int(rng.integers(1, 8))
            times = np.cumsum(rng.uniform(0.0, 0.3, steps))
            flt.update_plan(NAMES, times, _random_vector(rng, steps * 3).reshape(steps, 3),
                            now - rng.uniform(0, 0.6), now)
        elif event < 0.75:
            flt.update_surprise(rng.exponential(1.0), now)
        elif event < 0.77:
            flt.estop()
        elif event < 0.8:
            flt.enable()
            previous = None
        elif event < 0.81:
            flt.disable()
        command = flt.step(now)
        if command.positions is None:
            previous = None
            continue
        commands += 1
        positions = command.positions
        assert np.isfinite(positions).all()
        assert (positions >= LOWER).all()
        assert (positions <= UPPER).all()
        if previous is not None:
            assert (np.abs(positions - previous) <= limit + 1e-12).all()
        previous = positions
    assert commands > 0
