"""``lewm collect``: record simulated exploration episodes to an HDF5 episode file.

Each episode starts from a random clear configuration and runs an exploration policy for a fixed
number of steps. Row ``t`` contains the frame observed at step ``t`` and the action sent after
it, and the last row of an episode has a NaN action and a NaN ``q_cmd``.

Example::

    MUJOCO_GL=egl lewm collect data/reach.h5 --episodes 200 --contact-sheet data/reach.png
"""

import logging
import math
import time

import numpy as np

logger = logging.getLogger(__name__)


def record_episode(env, policy, steps: int, rng: np.random.Generator,
                   render: bool = True) -> dict:
    """Reset ``env`` to a random configuration and run ``policy`` for ``steps`` steps.

    Returns:
        Columns of one episode: ``pixels`` ``uint8 (T, H, W, 3)`` (absent without
        ``render``), ``action`` ``(T, A)``, ``proprio`` ``(T, 2A)``, ``q_cmd`` ``(T, A)`` and
        ``ee_pos`` ``(T, 3)``, with ``T = steps``.
    """
    if steps < 2:
        raise ValueError(f'an episode needs at least 2 steps, got {steps}')
    env.reset(seed=int(rng.integers(2**31)))
    policy.reset(env, rng)
    num_joints = env.num_joints
    columns = {
        'action': np.full((steps, num_joints), np.nan),
        'proprio': np.empty((steps, 2 * num_joints)),
        'q_cmd': np.full((steps, num_joints), np.nan),
        'ee_pos': np.empty((steps, 3)),
    }
    frames = []
    for t in range(steps):
        if render:
            frames.append(env.render())
        columns['proprio'][t] = np.concatenate([env.qpos, env.qvel])
        columns['ee_pos'][t] = env.ee_position()
        if t == steps - 1:
            break
        columns['action'][t] = env.step(policy.act(env))
        columns['q_cmd'][t] = env.q_cmd
    if render:
        columns['pixels'] = np.stack(frames)
    return columns


def contact_sheet(frames: np.ndarray, columns: int = 10) -> np.ndarray:
    """Tile frames ``(K, H, W, 3)`` into one image with a 2-pixel white border."""
    count, height, width, _ = frames.shape
    rows = math.ceil(count / columns)
    border = 2
    sheet = np.full((rows * (height + border) + border, columns * (width + border) + border, 3),
                    255, dtype=np.uint8)
    for index, frame in enumerate(frames):
        row, col = divmod(index, columns)
        top, left = border + row * (height + border), border + col * (width + border)
        sheet[top:top + height, left:left + width] = frame
    return sheet


def write_contact_sheet(path, h5_path, count: int = 60, seed: int = 0) -> None:
    """Write a PNG grid of ``count`` frames sampled evenly over an episode file."""
    import cv2
    import h5py

    with h5py.File(h5_path, 'r') as file:
        total = file['pixels'].shape[0]
        rows = np.unique(np.linspace(0, total - 1, min(count, total)).astype(int))
        frames = file['pixels'][rows]
    if not cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(frames), cv2.COLOR_RGB2BGR)):
        raise OSError(f'failed to write the contact sheet {path}')
    logger.info('wrote a contact sheet of %d frames to %s', len(rows), path)


def add_arguments(parser) -> None:
    from lewm_ros.sim.policies import POLICIES

    parser.add_argument('output', help='HDF5 episode file to write')
    parser.add_argument('--episodes', type=int, default=100, help='number of episodes')
    parser.add_argument('--steps', type=int, default=100, help='steps per episode')
    parser.add_argument('--policy', choices=sorted(POLICIES), default='waypoint',
                        help='exploration policy')
    parser.add_argument('--image-size', type=int, default=64,
                        help='side of the square camera frames (pixels)')
    parser.add_argument('--control-period', type=float, default=0.1,
                        help='simulated seconds per step')
    parser.add_argument('--seed', type=int, default=0, help='seed of the whole collection')
    parser.add_argument('--contact-sheet', metavar='PATH.png',
                        help='also write a PNG grid of sampled frames')
    parser.add_argument('--no-object', action='store_true', help='leave the cube out')
    parser.add_argument('--no-antialias', action='store_true',
                        help='render without multisampling (faster software rendering, '
                             'jagged edges)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')


def run(args) -> int:
    from tqdm import tqdm

    from lewm_ros.data.episodes import EpisodeWriter
    from lewm_ros.sim.arm_env import ArmEnv, CAMERA_NAME
    from lewm_ros.sim.policies import make_policy

    if args.episodes < 1 or args.steps < 2:
        logger.error('--episodes must be at least 1 and --steps at least 2, got %d and %d',
                     args.episodes, args.steps)
        return 2
    env = ArmEnv(image_size=args.image_size, control_period=args.control_period,
                 with_object=not args.no_object, antialias=not args.no_antialias)
    policy = make_policy(args.policy)
    rng = np.random.default_rng(args.seed)
    attrs = {'control_period': env.control_period, 'camera': CAMERA_NAME, 'seed': args.seed,
             'policy': args.policy, 'source': 'sim', 'antialias': env.antialias,
             'max_delta': env.max_delta.tolist(),
             'joint_limits': env.joint_limits.reshape(-1).tolist()}
    extra = {'q_cmd': env.num_joints, 'ee_pos': 3}
    start = time.perf_counter()
    with EpisodeWriter(args.output, env.image_size, env.joint_names, attrs, extra,
                       overwrite=args.overwrite) as writer:
        for _ in tqdm(range(args.episodes), desc='episodes', unit='ep'):
            episode = record_episode(env, policy, args.steps, rng)
            writer.add_episode(**episode)
    env.close()
    elapsed = time.perf_counter() - start
    frames = args.episodes * args.steps
    logger.info('collected %d frames in %.1f s (%.0f frames/s)', frames, elapsed,
                frames / elapsed)
    if args.contact_sheet:
        write_contact_sheet(args.contact_sheet, args.output)
    return 0
