"""The actuator's safety filter: turns untrusted plans into commands that respect the limits.

The filter is a plain class with no clock and no ROS. Every method that depends on time takes
``now`` (seconds, the same clock as the message stamps), so tests can drive it tick by tick.

Invariants of :meth:`SafetyFilter.step`, enforced for any sequence of inputs:

- every commanded position is finite and inside ``[lower, upper]`` of its joint;
- two consecutive commands differ by at most ``step_limit`` per joint (the smaller of
  ``max_step`` and ``max_velocity * control_period``). The exceptions are the first command after
  start-up or a re-enable: it starts from the measured position, clamped into the limits, so a
  robot that is outside its limits is moved to the nearest limit in one command.

A command follows the newest valid plan only while the filter is enabled, the joint states are
fresh and the plan is younger than ``plan_timeout``; otherwise it holds the previous command.
"""

from collections import Counter
from dataclasses import dataclass
import math
from typing import Mapping, Sequence

import numpy as np

from lewm_ros.urdf_limits import JointLimit

# Latched states. Only enable() leaves DISABLED, ESTOP and SURPRISE_HALT.
DISABLED = 'disabled'
ENABLED = 'enabled'
ESTOP = 'estop'
SURPRISE_HALT = 'surprise_halt'

# Reasons reported with every command.
FOLLOW = 'follow'
HOLD_NO_PLAN = 'hold_no_plan'
HOLD_PLAN_STALE = 'hold_plan_stale'
HOLD_STATE_STALE = 'hold_state_stale'
HOLD_ESTOP = 'hold_estop'
HOLD_SURPRISE = 'hold_surprise'
NO_STATE = 'no_joint_state'
NOT_ENABLED = 'disabled'


def _per_joint(value, count: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(count, float(array))
    if array.shape != (count,):
        raise ValueError(f'{name} needs one value or {count} values (one per joint), '
                         f'got {array.tolist()}')
    return array


@dataclass
class SafetyConfig:
    """Limits and timeouts of the safety filter.

    Attributes:
        joint_names: commanded joints, in the order of every command (the controller's order).
        lower, upper: position limits (rad), one per joint; ``-inf``/``inf`` for none.
        max_velocity: velocity limits (rad/s), one per joint; ``inf`` for none.
        control_period: time between two commands (s).
        max_step: largest change of one joint between two commands (rad), one value or one per
            joint. The effective limit is ``min(max_step, max_velocity * control_period)``.
        plan_timeout: a plan older than this (s, measured from its stamp) is no longer followed.
        state_timeout: joint states older than this (s) stop plan following.
        surprise_threshold: a surprise above this halts the arm; ``inf`` disables the check.
        auto_enable: start enabled instead of waiting for an explicit enable().
        lookahead: a tick at time ``now`` commands the plan's position at ``now + lookahead``
            (s). ``None`` means one control period, which is when the command is reached.
    """

    joint_names: Sequence[str]
    lower: Sequence[float]
    upper: Sequence[float]
    max_velocity: Sequence[float]
    control_period: float = 0.1
    max_step: float | Sequence[float] = 0.05
    plan_timeout: float = 0.5
    state_timeout: float = 0.5
    surprise_threshold: float = math.inf
    auto_enable: bool = False
    lookahead: float | None = None

    def __post_init__(self) -> None:
        self.joint_names = [str(name) for name in self.joint_names]
        count = len(self.joint_names)
        if count == 0:
            raise ValueError('SafetyConfig needs at least one joint name')
        if len(set(self.joint_names)) != count:
            raise ValueError(f'duplicate joint names in {self.joint_names}')
        self.lower = _per_joint(self.lower, count, 'lower')
        self.upper = _per_joint(self.upper, count, 'upper')
        self.max_velocity = _per_joint(self.max_velocity, count, 'max_velocity')
        self.max_step = _per_joint(self.max_step, count, 'max_step')

        problems = []
        if np.isnan(self.lower).any() or np.isnan(self.upper).any():
            problems.append('position limits contain NaN')
        if (self.lower > self.upper).any():
            problems.append(f'lower limits {self.lower.tolist()} exceed upper limits '
                            f'{self.upper.tolist()}')
        if not self.control_period > 0 or not math.isfinite(self.control_period):
            problems.append(f'control_period must be a positive number of seconds, got '
                            f'{self.control_period}')
        if not (self.max_velocity > 0).all() or not (self.max_step > 0).all():
            problems.append(f'max_velocity {self.max_velocity.tolist()} and max_step '
                            f'{self.max_step.tolist()} must be positive')
        for name in ('plan_timeout', 'state_timeout'):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                problems.append(f'{name} must be a positive number of seconds, got {value}')
        if math.isnan(self.surprise_threshold):
            problems.append('surprise_threshold is NaN; use inf to disable the check')
        if problems:
            raise ValueError('invalid safety configuration: ' + '; '.join(problems))

        unbounded = [name for name, limit in zip(self.joint_names, self.step_limit)
                     if not math.isfinite(limit)]
        if unbounded:
            raise ValueError(f'joints {unbounded} have neither a velocity limit nor max_step; '
                             'set max_step (rad per command)')
        if self.lookahead is None:
            self.lookahead = self.control_period

    @property
    def step_limit(self) -> np.ndarray:
        """Largest change per command and joint (rad), shape ``(J,)``."""
        with np.errstate(invalid='ignore'):
            return np.minimum(self.max_step, self.max_velocity * self.control_period)

    @classmethod
    def from_limits(cls, limits: Mapping[str, JointLimit], joint_names=None,
                    lower_override=None, upper_override=None, velocity_override=None,
                    **settings) -> 'SafetyConfig':
        """Build a config from URDF limits, optionally narrowed by overrides.

        Args:
            limits: joint name -> :class:`JointLimit`, e.g. from ``parse_urdf_limits``.
            joint_names: commanded joints in command order; ``None`` takes every joint of
                ``limits`` in its order.
            lower_override, upper_override, velocity_override: ``None`` or one value per joint.
                They may only narrow the URDF limits.
            **settings: the remaining :class:`SafetyConfig` fields.

        Raises:
            ValueError: for a joint missing from ``limits`` or an override that widens a limit.
        """
        names = list(limits) if joint_names is None else [str(n) for n in joint_names]
        missing = [name for name in names if name not in limits]
        if missing:
            raise ValueError(f'joints {missing} are not movable joints of the robot description '
                             f'(known: {list(limits)})')
        lower = np.array([limits[n].lower for n in names], dtype=np.float64)
        upper = np.array([limits[n].upper for n in names], dtype=np.float64)
        velocity = np.array([limits[n].velocity for n in names], dtype=np.float64)

        def narrow(base, override, name, tighter):
            if override is None or len(override) == 0:
                return base
            override = _per_joint(override, len(names), name)
            wider = [n for n, b, o in zip(names, base, override) if not tighter(o, b)]
            if wider:
                raise ValueError(f'{name} {override.tolist()} is looser than the robot '
                                 f'description {base.tolist()} for joints {wider}; overrides may '
                                 'only narrow the limits')
            return override

        lower = narrow(lower, lower_override, 'lower_override', lambda o, b: o >= b)
        upper = narrow(upper, upper_override, 'upper_override', lambda o, b: o <= b)
        velocity = narrow(velocity, velocity_override, 'velocity_override',
                          lambda o, b: 0 < o <= b)
        return cls(joint_names=names, lower=lower, upper=upper, max_velocity=velocity,
                   **settings)


@dataclass
class Command:
    """Output of one tick: positions ``(J,)`` in config joint order (rad), or ``None``."""

    positions: np.ndarray | None
    reason: str


class _Plan:
    """A validated plan: knot times ``(K,)`` relative to ``start`` and positions ``(K, J)``."""

    def __init__(self, start: float, times: np.ndarray, positions: np.ndarray):
        self.start = start
        self.times = times
        self.positions = positions

    def sample(self, t: float) -> np.ndarray:
        """Interpolate linearly at absolute time ``t``; the ends are held."""
        tau = t - self.start
        return np.array([np.interp(tau, self.times, self.positions[:, j])
                         for j in range(self.positions.shape[1])])


class SafetyFilter:
    """Filter plans, joint states, surprise and operator requests into safe joint commands.

    Feed it with :meth:`update_joint_state`, :meth:`update_plan`, :meth:`update_surprise`,
    :meth:`estop`, :meth:`enable` and :meth:`disable`, and call :meth:`step` once per control
    period. The ``update_*`` methods return False for a rejected input and count the reason in
    :attr:`counters`.
    """

    def __init__(self, config: SafetyConfig):
        self.config = config
        self.counters = Counter()
        self.state = ENABLED if config.auto_enable else DISABLED
        self._measured = None       # (J,) latest accepted joint positions
        self._state_stamp = None    # stamp (s) of those positions
        self._plan = None
        self._previous = None       # (J,) last command, None after start-up or a re-enable
        self._state_was_stale = False
        self.last_reason = NOT_ENABLED if self.state == DISABLED else NO_STATE

    # ----------------------------------------------------------------------------------------
    # Inputs

    def _select(self, names, values, kind: str):
        """Reorder ``values`` named by ``names`` into config order, or return None if invalid."""
        names = [str(name) for name in names]
        values = np.asarray(values, dtype=np.float64)
        if len(set(names)) != len(names):
            self.counters[f'{kind}_rejected_joints'] += 1
            return None
        missing = [name for name in self.config.joint_names if name not in names]
        if missing:
            self.counters[f'{kind}_rejected_joints'] += 1
            return None
        if not np.isfinite(values).all():
            self.counters[f'{kind}_rejected_nonfinite'] += 1
            return None
        order = [names.index(name) for name in self.config.joint_names]
        return values[..., order]

    def _age_ok(self, stamp: float, now: float, timeout: float, kind: str) -> bool:
        if not math.isfinite(stamp) or abs(now - stamp) > timeout:
            self.counters[f'{kind}_rejected_stale'] += 1
            return False
        return True

    def update_joint_state(self, names: Sequence[str], positions: Sequence[float],
                           stamp: float, now: float) -> bool:
        """Store measured positions (rad) of the named joints, stamped ``stamp`` (s).

        A ``stamp`` of 0 means "unknown" and is replaced by ``now``. Rejected: missing or
        duplicate names, a length mismatch, NaN or inf, and stamps more than
        ``state_timeout`` away from ``now``.
        """
        if len(names) != len(positions):
            self.counters['state_rejected_malformed'] += 1
            return False
        stamp = now if stamp == 0 else stamp
        if not self._age_ok(stamp, now, self.config.state_timeout, 'state'):
            return False
        selected = self._select(names, positions, 'state')
        if selected is None:
            return False
        self._measured = selected
        self._state_stamp = stamp
        return True

    def update_plan(self, names: Sequence[str], times: Sequence[float],
                    positions, stamp: float, now: float) -> bool:
        """Replace the plan with absolute joint targets ``positions`` ``(K, len(names))`` (rad).

        ``times`` ``(K,)`` are seconds from ``stamp`` (0 means "now") and must be finite,
        non-negative and strictly increasing. The new plan starts from the last command, so a
        replacement never jumps: the first knot is reached by interpolation and every step is
        then rate-limited. Plans are ignored unless the filter is enabled.
        """
        if self.state != ENABLED:
            self.counters['plan_ignored_not_enabled'] += 1
            return False
        times = np.asarray(times, dtype=np.float64)
        try:
            positions = np.asarray(positions, dtype=np.float64).reshape(len(times), len(names))
        except ValueError:
            self.counters['plan_rejected_malformed'] += 1
            return False
        if len(times) == 0:
            self.counters['plan_rejected_malformed'] += 1
            return False
        if not np.isfinite(times).all():
            self.counters['plan_rejected_nonfinite'] += 1
            return False
        if times[0] < 0 or (np.diff(times) <= 0).any():
            self.counters['plan_rejected_malformed'] += 1
            return False
        stamp = now if stamp == 0 else stamp
        if not self._age_ok(stamp, now, self.config.plan_timeout, 'plan'):
            return False
        selected = self._select(names, positions, 'plan')
        if selected is None:
            return False

        handover = self._previous if self._previous is not None else self._measured
        if handover is not None and times[0] > 0:
            times = np.concatenate([[0.0], times])
            selected = np.vstack([handover, selected])
        if self._plan is not None:
            self.counters['plans_replaced'] += 1
        self._plan = _Plan(stamp, times, selected)
        self.counters['plans_accepted'] += 1
        return True

    def update_surprise(self, value: float, now: float) -> bool:
        """Latch SURPRISE_HALT when an enabled filter receives ``value > surprise_threshold``.

        NaN or inf surprise is rejected and counted, but it does not halt on its own. Returns
        False only for a rejected value.
        """
        value = float(value)
        if not math.isfinite(value):
            self.counters['surprise_rejected_nonfinite'] += 1
            return False
        if value > self.config.surprise_threshold:
            self.counters['surprise_exceeded'] += 1
            if self.state == ENABLED:
                self.state = SURPRISE_HALT
                self._plan = None
                self.counters['surprise_halts'] += 1
        return True

    def estop(self) -> None:
        """Latch the emergency stop: hold position until :meth:`enable`."""
        self.state = ESTOP
        self._plan = None
        self.counters['estops'] += 1

    def enable(self) -> None:
        """Enable plan following and clear any latched e-stop or surprise halt.

        The plan and the previous command are dropped, so only plans received after this call
        are followed, starting from the measured position.
        """
        self.state = ENABLED
        self._plan = None
        self._previous = None
        self.counters['enables'] += 1

    def disable(self) -> None:
        """Stop sending commands until :meth:`enable`; an e-stop stays latched."""
        if self.state != ESTOP:
            self.state = DISABLED
        self._plan = None
        self.counters['disables'] += 1

    # ----------------------------------------------------------------------------------------
    # Output

    def _target(self, now: float):
        """Return (target positions or None for "hold", reason) for an active filter."""
        if self.state == ESTOP:
            return None, HOLD_ESTOP
        if self.state == SURPRISE_HALT:
            return None, HOLD_SURPRISE
        stale = now - self._state_stamp > self.config.state_timeout
        if stale and not self._state_was_stale:
            self.counters['state_timeouts'] += 1
        self._state_was_stale = stale
        if stale:
            return None, HOLD_STATE_STALE
        if self._plan is None:
            return None, HOLD_NO_PLAN
        if now - self._plan.start > self.config.plan_timeout:
            self._plan = None
            self.counters['plan_timeouts'] += 1
            return None, HOLD_PLAN_STALE
        return self._plan.sample(now + self.config.lookahead), FOLLOW

    def step(self, now: float) -> Command:
        """Compute the command for time ``now`` (s); call once per control period."""
        self.counters['ticks'] += 1
        if self.state == DISABLED:
            self._previous = None
            return self._emit(Command(None, NOT_ENABLED))
        if self._measured is None:
            return self._emit(Command(None, NO_STATE))

        target, reason = self._target(now)
        reference = self._previous if self._previous is not None else self._measured
        if target is None:
            target = reference
        limit = self.config.step_limit
        delta = target - reference
        limited = np.clip(delta, -limit, limit)
        if (np.abs(limited - delta) > 1e-12).any():
            self.counters['step_limited'] += 1
        unclamped = reference + limited
        command = np.clip(unclamped, self.config.lower, self.config.upper)
        if (command != unclamped).any():
            self.counters['position_clamped'] += 1
        self._previous = command
        self.counters['commands'] += 1
        return self._emit(Command(command.copy(), reason))

    def _emit(self, command: Command) -> Command:
        self.counters[f'ticks_{command.reason}'] += 1
        self.last_reason = command.reason
        return command

    @property
    def measured(self) -> np.ndarray | None:
        """Latest accepted joint positions ``(J,)`` (rad) in config order, or None."""
        return None if self._measured is None else self._measured.copy()

    @property
    def has_plan(self) -> bool:
        return self._plan is not None
