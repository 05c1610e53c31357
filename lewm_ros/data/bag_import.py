"""``lewm import-bag``: convert a rosbag2 recording (MCAP or sqlite3) to an HDF5 episode file.

The bag is read with the ``rosbags`` library, so no ROS installation is needed. Three streams are
used: a camera topic (``sensor_msgs/Image`` in any encoding of :mod:`lewm_ros.imaging`, or
``sensor_msgs/CompressedImage``), ``sensor_msgs/JointState`` and the commanded positions
(``trajectory_msgs/JointTrajectory`` or ``std_msgs/Float64MultiArray``).

Resampling rules, applied in this order:

1. Time of a message: its ``header.stamp``, or the bag receive time when the stamp is zero. A
   type without a header (``Float64MultiArray``) gets its receive time plus the median of
   ``stamp - receive time`` of the camera messages of its segment, which moves it onto the
   camera clock (simulated time in a simulation recording).
2. Clock jumps: walking each stream in receive order, a stamp more than ``clock_jump`` seconds
   older than the newest stamp of that stream so far (a simulator reset, a replayed clock)
   starts a new segment at that receive time. Jumps of several streams within ``max_gap`` of
   receive time count as one, cut at the earliest, and every stream is cut at the same receive
   times. Smaller backward steps are out-of-order messages: each stream is sorted by stamp
   within its segment and, of messages with equal stamps, the last received one is kept.
3. Gaps: inside a segment, a camera or joint-state gap longer than ``max_gap`` seconds ends the
   episode; the next one starts at the next message. An episode covers the time where both
   streams are present.
4. Grid: steps at ``t_k = t_0 + k * control_period`` from the episode start to its end.
5. Frame of step ``k``: the newest image stamped at or before ``t_k + control_period / 2``.
   A step whose image is older than ``t_k - control_period / 2`` is a dropped frame: the
   previous image is repeated (rule 3 bounds the repeats) and the count is reported.
6. Joint positions and velocities: linear interpolation of each joint, matched by name, at
   ``t_k``. Missing velocities are differentiated from the interpolated positions.
7. Commanded positions ``q_cmd[k]``: the command in effect just before ``t_{k+1}``, i.e. the
   target the robot followed during step ``k``, per joint from the newest command that names
   the joint. A ``JointTrajectory`` is evaluated along its points (linear between points, the
   first point before it starts, the last point after it ends). Before the first command, the
   measured position at the episode start is used.
8. Actions: ``action[k] = q_cmd[k] - q_cmd[k-1]`` with ``q_cmd[-1]`` the measured positions at
   the episode start; the last row of an episode has NaN ``action`` and ``q_cmd``.

Frames are centre-cropped to a square and resized to ``image_size`` with area interpolation.
"""

from dataclasses import dataclass, field
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'
COMMAND_TYPES = ('trajectory_msgs/msg/JointTrajectory', 'std_msgs/msg/Float64MultiArray')


@dataclass
class ImportSettings:
    """Topics, joint order and resampling rules of an import (see the module docstring)."""

    image_topic: str = '/camera/image_raw'
    joint_state_topic: str = '/joint_states'
    # None picks the only JointTrajectory or Float64MultiArray topic of the bag.
    command_topic: str | None = None
    # Joints in column order; None takes the names of the first joint state message.
    joint_names: list | None = None
    # Order of the values of a Float64MultiArray command; None means joint_names.
    command_joint_names: list | None = None
    control_period: float = 0.1
    image_size: int = 64
    max_gap: float = 0.5
    clock_jump: float = 0.5
    min_steps: int = 2

    def validate(self) -> None:
        if self.control_period <= 0:
            raise ValueError(f'control_period must be positive, got {self.control_period} s')
        if self.max_gap < self.control_period:
            raise ValueError(f'max_gap ({self.max_gap} s) must be at least the control period '
                             f'({self.control_period} s)')
        if self.clock_jump <= 0:
            raise ValueError(f'clock_jump must be positive, got {self.clock_jump} s')
        if self.image_size < 8:
            raise ValueError(f'image_size must be at least 8 pixels, got {self.image_size}')
        if self.min_steps < 2:
            raise ValueError(f'min_steps must be at least 2, got {self.min_steps}')


@dataclass
class ImportReport:
    """Counts of what the import did, for the log and for tests."""

    episodes: int = 0
    steps: int = 0
    segments: int = 0
    clock_jumps: int = 0
    gap_splits: int = 0
    dropped_frames: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    short_episodes_skipped: int = 0
    episode_lengths: list = field(default_factory=list)


@dataclass
class _Stream:
    """Messages of one topic: stamp and receive time (seconds) and the decoded payload."""

    stamps: list = field(default_factory=list)
    received: list = field(default_factory=list)
    payloads: list = field(default_factory=list)

    def add(self, stamp: float, received: float, payload) -> None:
        self.stamps.append(stamp)
        self.received.append(received)
        self.payloads.append(payload)


def _stamp(msg, received: float) -> float:
    header = getattr(msg, 'header', None)
    if header is None:
        return received
    stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
    return stamp if stamp > 0 else received


def _square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def _decode_image(msg, msgtype: str, size: int) -> np.ndarray:
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        import cv2

        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'failed to decode a CompressedImage in format {msg.format!r}')
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        from lewm_ros.imaging import image_to_rgb

        rgb = image_to_rgb(msg)
    return _square_resize(rgb, size)


def _read_bag(path: Path, settings: ImportSettings):
    """Read the three streams of the bag, decoding images to small RGB frames."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores

    streams = {'image': _Stream(), 'joints': _Stream(), 'command': _Stream()}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        _check_topic(topics, settings.image_topic, IMAGE_TYPES, '--image-topic')
        _check_topic(topics, settings.joint_state_topic, (JOINT_STATE_TYPE,),
                     '--joint-state-topic')
        command_topic = settings.command_topic
        if command_topic is None:
            candidates = sorted(t for t, m in topics.items() if m in COMMAND_TYPES)
            if len(candidates) != 1:
                raise ValueError(
                    f'{path}: cannot pick the command topic, found {candidates or "none"} of '
                    f'types {COMMAND_TYPES}; name it with --command-topic')
            command_topic = candidates[0]
        _check_topic(topics, command_topic, COMMAND_TYPES, '--command-topic')
        command_type = topics[command_topic]

        by_topic = {settings.image_topic: 'image', settings.joint_state_topic: 'joints',
                    command_topic: 'command'}
        selected = [c for c in reader.connections if c.topic in by_topic]
        for connection, timestamp, raw in reader.messages(connections=selected):
            msg = reader.deserialize(raw, connection.msgtype)
            received = timestamp * 1e-9
            kind = by_topic[connection.topic]
            if kind == 'image':
                payload = _decode_image(msg, connection.msgtype, settings.image_size)
            elif kind == 'joints':
                payload = (list(msg.name), np.array(msg.position, dtype=np.float64),
                           np.array(msg.velocity, dtype=np.float64))
            elif command_type == 'trajectory_msgs/msg/JointTrajectory':
                times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
                                  for p in msg.points])
                positions = np.array([p.positions for p in msg.points], dtype=np.float64)
                payload = (list(msg.joint_names), times, positions)
            else:
                names = settings.command_joint_names or settings.joint_names
                payload = (names, np.zeros(1), np.array(msg.data, dtype=np.float64)[None])
            streams[kind].add(_stamp(msg, received), received, payload)
    return streams, command_topic, command_type


def _check_topic(topics: dict, topic: str, types: tuple, option: str) -> None:
    if topic not in topics:
        raise ValueError(f'topic {topic} is not in the bag (topics: {sorted(topics)}); '
                         f'choose one with {option}')
    if topics[topic] not in types:
        raise ValueError(f'topic {topic} has type {topics[topic]}, expected one of {types}')


def _segment_breaks(streams: dict, clock_jump: float, window: float) -> list[float]:
    """Return the receive times at which a backward clock jump starts a new segment.

    Each stream is walked in receive order; a stamp more than ``clock_jump`` older than the
    newest stamp of that stream so far is a jump. Jumps of different streams less than
    ``window`` seconds of receive time apart are one jump, cut at the earliest of them.
    """
    jumps = []
    for stream in streams.values():
        newest = -np.inf
        for index in np.argsort(stream.received, kind='stable'):
            stamp = stream.stamps[index]
            if stamp < newest - clock_jump:
                jumps.append(stream.received[index])
                newest = stamp
            else:
                newest = max(newest, stamp)
    breaks = []
    for received in sorted(jumps):
        if not breaks or received - breaks[-1] > window:
            breaks.append(received)
    return breaks


def _split(stream: _Stream, edges: list[float], report: ImportReport) -> list[_Stream]:
    """Cut a stream at receive-time edges, then sort each part by stamp."""
    received = np.asarray(stream.received)
    part_of = np.searchsorted(np.asarray(edges), received, side='right')
    parts = []
    for part in range(len(edges) + 1):
        indices = np.flatnonzero(part_of == part)
        indices = indices[np.argsort(received[indices], kind='stable')]
        stamps = np.asarray(stream.stamps)[indices]
        report.out_of_order += int(np.sum(np.diff(stamps) < 0))
        # Sort by stamp; among equal stamps the last received one wins.
        order = np.lexsort((np.arange(len(indices)), stamps))
        sorted_indices, sorted_stamps = indices[order], stamps[order]
        keep = np.ones(len(order), dtype=bool)
        keep[:-1] = sorted_stamps[1:] != sorted_stamps[:-1]
        report.duplicates += int(np.sum(~keep))
        result = _Stream()
        for index in sorted_indices[keep]:
            result.add(stream.stamps[index], stream.received[index], stream.payloads[index])
        parts.append(result)
    return parts


def _covered(stamps, max_gap: float) -> list[tuple[float, float]]:
    """Return the intervals in which consecutive stamps are at most ``max_gap`` apart."""
    if len(stamps) == 0:
        return []
    stamps = np.asarray(stamps)
    cuts = np.flatnonzero(np.diff(stamps) > max_gap)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(stamps) - 1]])
    return [(stamps[s], stamps[e]) for s, e in zip(starts, ends)]


def _intersect(first, second) -> list[tuple[float, float]]:
    out = []
    for a0, a1 in first:
        for b0, b1 in second:
            low, high = max(a0, b0), min(a1, b1)
            if low <= high:
                out.append((low, high))
    return sorted(out)


def _joint_series(joints: _Stream, joint_names: list) -> dict:
    """Return per joint ``(stamps, positions, velocities)`` arrays from the joint states."""
    series = {name: ([], [], []) for name in joint_names}
    for stamp, (names, position, velocity) in zip(joints.stamps, joints.payloads):
        for i, name in enumerate(names):
            if name in series and i < len(position):
                series[name][0].append(stamp)
                series[name][1].append(position[i])
                series[name][2].append(velocity[i] if i < len(velocity) else np.nan)
    return {name: tuple(np.asarray(v, dtype=np.float64) for v in values)
            for name, values in series.items()}


def _interpolate_joints(series: dict, joint_names: list, grid: np.ndarray,
                        control_period: float) -> tuple[np.ndarray, np.ndarray]:
    positions = np.empty((len(grid), len(joint_names)))
    velocities = np.empty_like(positions)
    for j, name in enumerate(joint_names):
        stamps, pos, vel = series[name]
        if len(stamps) == 0:
            raise ValueError(f'joint {name} has no joint state in this part of the bag')
        positions[:, j] = np.interp(grid, stamps, pos)
        if np.all(np.isfinite(vel)):
            velocities[:, j] = np.interp(grid, stamps, vel)
        elif len(grid) > 1:
            velocities[:, j] = np.gradient(positions[:, j], control_period)
        else:
            velocities[:, j] = 0.0
    return positions, velocities


def _evaluate_commands(command: _Stream, joint_names: list, times: np.ndarray) -> np.ndarray:
    """Return the commanded positions ``(len(times), A)`` in effect at ``times`` (NaN: none)."""
    result = np.full((len(times), len(joint_names)), np.nan)
    for j, name in enumerate(joint_names):
        starts, entries = [], []
        for stamp, (names, point_times, positions) in zip(command.stamps, command.payloads):
            if name in names and len(positions):
                starts.append(stamp)
                entries.append((stamp + point_times, positions[:, names.index(name)]))
        if not starts:
            continue
        latest = np.searchsorted(np.asarray(starts), times, side='right') - 1
        for k, index in enumerate(latest):
            if index >= 0:
                point_times, values = entries[index]
                result[k, j] = np.interp(times[k], point_times, values)
    return result


def _select_frames(image: _Stream, grid: np.ndarray, period: float,
                   report: ImportReport) -> np.ndarray:
    stamps = np.asarray(image.stamps)
    chosen = np.searchsorted(stamps, grid + period / 2, side='right') - 1
    chosen = np.maximum(chosen, 0)
    report.dropped_frames += int(np.sum(stamps[chosen] < grid - period / 2))
    return np.stack([image.payloads[i] for i in chosen])


def _build_episode(segment: dict, start: float, end: float, settings: ImportSettings,
                   series: dict, report: ImportReport) -> dict | None:
    period = settings.control_period
    steps = int(np.floor((end - start) / period + 1e-9)) + 1
    if steps < settings.min_steps:
        report.short_episodes_skipped += 1
        return None
    grid = start + period * np.arange(steps)
    names = settings.joint_names
    pixels = _select_frames(segment['image'], grid, period, report)
    positions, velocities = _interpolate_joints(series, names, grid, period)

    # The command followed during step k is the one in effect just before t_{k+1}.
    q_cmd = _evaluate_commands(segment['command'], names, grid[1:] - 1e-6)
    q_cmd = np.where(np.isnan(q_cmd), positions[0], q_cmd)
    previous = np.vstack([positions[:1], q_cmd[:-1]])
    action = np.full((steps, len(names)), np.nan)
    action[:-1] = q_cmd - previous
    q_cmd_column = np.full((steps, len(names)), np.nan)
    q_cmd_column[:-1] = q_cmd
    return {'pixels': pixels, 'action': action, 'q_cmd': q_cmd_column,
            'proprio': np.hstack([positions, velocities])}


def convert_bag(bag_path, settings: ImportSettings) -> tuple[list[dict], ImportReport]:
    """Read a bag and resample it into episodes (see the module docstring for the rules).

    Returns:
        ``(episodes, report)``: each episode a dict of ``pixels``, ``action``, ``q_cmd`` and
        ``proprio`` arrays; ``settings.joint_names`` is filled in when it was None.

    Raises:
        ValueError: for a missing topic, unknown joints or a command of the wrong size.
    """
    settings.validate()
    bag_path = Path(bag_path)
    if not bag_path.exists():
        raise FileNotFoundError(f'bag {bag_path} not found')
    report = ImportReport()
    streams, command_topic, command_type = _read_bag(bag_path, settings)
    if not streams['image'].stamps or not streams['joints'].stamps:
        raise ValueError(f'{bag_path}: no messages on {settings.image_topic} or '
                         f'{settings.joint_state_topic}')

    if settings.joint_names is None:
        settings.joint_names = list(streams['joints'].payloads[0][0])
    known = {name for names, _, _ in streams['joints'].payloads for name in names}
    unknown = [name for name in settings.joint_names if name not in known]
    if unknown:
        raise ValueError(f'joints {unknown} are not in {settings.joint_state_topic}; it has '
                         f'{sorted(known)}')
    if command_type == 'std_msgs/msg/Float64MultiArray':
        expected = len(settings.command_joint_names or settings.joint_names)
        sizes = {len(p[2][0]) for p in streams['command'].payloads}
        if sizes - {expected}:
            raise ValueError(
                f'{command_topic} carries {sorted(sizes)} values per message but '
                f'{expected} joints are expected; set --command-joints in controller order')
        if settings.command_joint_names is None:
            fixed = _Stream()
            for stamp, received, (_, times, values) in zip(
                    streams['command'].stamps, streams['command'].received,
                    streams['command'].payloads):
                fixed.add(stamp, received, (settings.joint_names, times, values))
            streams['command'] = fixed

    breaks = _segment_breaks(streams, settings.clock_jump, settings.max_gap)
    report.clock_jumps = len(breaks)
    parts = {kind: _split(stream, breaks, report) for kind, stream in streams.items()}
    episodes = []
    for index in range(len(breaks) + 1):
        segment = {kind: parts[kind][index] for kind in parts}
        if not segment['image'].stamps or not segment['joints'].stamps:
            continue
        report.segments += 1
        image_runs = _covered(segment['image'].stamps, settings.max_gap)
        joint_runs = _covered(segment['joints'].stamps, settings.max_gap)
        report.gap_splits += len(image_runs) - 1 + len(joint_runs) - 1
        if command_type == 'std_msgs/msg/Float64MultiArray':
            camera = segment['image']
            offset = float(np.median(np.subtract(camera.stamps, camera.received)))
            segment['command'].stamps = [t + offset for t in segment['command'].received]
        series = _joint_series(segment['joints'], settings.joint_names)
        for start, end in _intersect(image_runs, joint_runs):
            episode = _build_episode(segment, start, end, settings, series, report)
            if episode is not None:
                episodes.append(episode)
                report.episode_lengths.append(len(episode['pixels']))
    report.episodes = len(episodes)
    report.steps = int(sum(report.episode_lengths))
    return episodes, report


def import_bag(bag_path, output, settings: ImportSettings,
               overwrite: bool = False) -> ImportReport:
    """Convert a bag and write the episodes to an HDF5 episode file.

    Raises:
        ValueError: when the bag yields no episode, besides the errors of :func:`convert_bag`.
    """
    from lewm_ros.data.episodes import EpisodeWriter

    episodes, report = convert_bag(bag_path, settings)
    if not episodes:
        raise ValueError(f'{bag_path}: no episode of at least {settings.min_steps} steps; '
                         'check the topics, --max-gap and --control-period')
    attrs = {'control_period': settings.control_period, 'camera': settings.image_topic,
             'seed': -1, 'policy': 'recorded', 'source': f'rosbag2:{Path(bag_path).name}',
             'joint_state_topic': settings.joint_state_topic, 'max_gap': settings.max_gap,
             'clock_jump': settings.clock_jump}
    with EpisodeWriter(output, settings.image_size, settings.joint_names, attrs,
                       {'q_cmd': len(settings.joint_names)}, overwrite=overwrite) as writer:
        for episode in episodes:
            writer.add_episode(**episode)
    logger.info('imported %s: %s', bag_path, report)
    return report


def add_arguments(parser) -> None:
    parser.add_argument('bag', help='rosbag2 directory (MCAP or sqlite3 storage)')
    parser.add_argument('output', help='HDF5 episode file to write')
    parser.add_argument('--image-topic', default='/camera/image_raw',
                        help='sensor_msgs/Image or CompressedImage topic')
    parser.add_argument('--joint-state-topic', default='/joint_states',
                        help='sensor_msgs/JointState topic')
    parser.add_argument('--command-topic',
                        help='JointTrajectory or Float64MultiArray topic with the commanded '
                             'positions (default: the only such topic in the bag)')
    parser.add_argument('--joints', nargs='+', metavar='NAME',
                        help='joints in column order (default: order of the first joint state)')
    parser.add_argument('--command-joints', nargs='+', metavar='NAME',
                        help='joint order of a Float64MultiArray command (default: --joints)')
    parser.add_argument('--control-period', type=float, default=0.1,
                        help='resampling period (seconds)')
    parser.add_argument('--image-size', type=int, default=64,
                        help='side of the square output frames (pixels)')
    parser.add_argument('--max-gap', type=float, default=0.5,
                        help='a camera or joint-state gap longer than this ends an episode (s)')
    parser.add_argument('--clock-jump', type=float, default=0.5,
                        help='a backward stamp jump larger than this starts a new episode (s)')
    parser.add_argument('--min-steps', type=int, default=2,
                        help='drop episodes shorter than this many steps')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')


def run(args) -> int:
    settings = ImportSettings(
        image_topic=args.image_topic, joint_state_topic=args.joint_state_topic,
        command_topic=args.command_topic, joint_names=args.joints,
        command_joint_names=args.command_joints, control_period=args.control_period,
        image_size=args.image_size, max_gap=args.max_gap, clock_jump=args.clock_jump,
        min_steps=args.min_steps)
    try:
        report = import_bag(args.bag, args.output, settings, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        logger.error('import failed: %s', error)
        return 1
    print(f'{report.episodes} episodes, {report.steps} steps written to {args.output} '
          f'(clock jumps {report.clock_jumps}, gap splits {report.gap_splits}, dropped frames '
          f'{report.dropped_frames}, out-of-order {report.out_of_order}, skipped short '
          f'{report.short_episodes_skipped})')
    return 0
