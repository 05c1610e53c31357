"""Simulation speed: control steps/s with and without rendering, collection frames/s to HDF5."""

import os
import tempfile
import time


def add_arguments(parser) -> None:
    parser.add_argument('--steps', type=int, default=500,
                        help='control steps per timed figure (default 500)')
    parser.add_argument('--image-size', type=int, action='append',
                        help='rendered image side in pixels (repeatable; default: 64 and 224)')
    parser.add_argument('--episodes', type=int, default=5,
                        help='episodes written in the collection figure (default 5)')
    parser.add_argument('--episode-steps', type=int, default=100,
                        help='steps per episode in the collection figure (default 100)')


def _steps_per_second(env, steps: int, render: bool) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    env.reset(seed=0)
    actions = rng.uniform(-1, 1, size=(steps, env.num_joints)) * env.max_delta
    env.step(actions[0])
    if render:
        env.render()  # creates the GL context outside the timed loop
    start = time.perf_counter()
    for action in actions:
        env.step(action)
        if render:
            env.render()
    return steps / (time.perf_counter() - start)


def _collection_frames_per_second(image_size: int, episodes: int, steps: int) -> float:
    import numpy as np

    from lewm_ros.data.collect import record_episode
    from lewm_ros.data.episodes import EpisodeWriter
    from lewm_ros.sim.arm_env import ArmEnv, CAMERA_NAME
    from lewm_ros.sim.policies import make_policy

    env = ArmEnv(image_size=image_size)
    policy = make_policy('waypoint')
    rng = np.random.default_rng(0)
    attrs = {'control_period': env.control_period, 'camera': CAMERA_NAME, 'seed': 0,
             'source': 'sim', 'policy': 'waypoint'}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, 'bench.h5')
        start = time.perf_counter()
        with EpisodeWriter(path, image_size, env.joint_names, attrs,
                           {'q_cmd': env.num_joints, 'ee_pos': 3}) as writer:
            for _ in range(episodes):
                writer.add_episode(**record_episode(env, policy, steps, rng))
        elapsed = time.perf_counter() - start
    env.close()
    return episodes * steps / elapsed


def _gl_renderer() -> str | None:
    """Return the OpenGL renderer string of the current context (e.g. llvmpipe), if any."""
    try:
        from OpenGL import GL

        name = GL.glGetString(GL.GL_RENDERER)
    except Exception:  # noqa: B902 - any GL failure only means the name is unknown
        return None
    return name.decode() if name else None


def run(args) -> int:
    from lewm_ros.sim.arm_env import ArmEnv

    sizes = args.image_size or [64, 224]
    rows = []
    env = ArmEnv(image_size=sizes[0])
    control_period = env.control_period
    rows.append(('physics only', '-', _steps_per_second(env, args.steps, render=False), 'steps/s'))
    env.close()
    gl_renderer = 'unknown'
    for size in sizes:
        for antialias in (True, False):
            env = ArmEnv(image_size=size, antialias=antialias)
            name = 'step + render' if antialias else 'step + render, no AA'
            rows.append((name, f'{size}x{size}',
                         _steps_per_second(env, args.steps, render=True), 'steps/s'))
            gl_renderer = _gl_renderer() or gl_renderer
            env.close()
    for size in sizes:
        rows.append(('collect to HDF5', f'{size}x{size}',
                     _collection_frames_per_second(size, args.episodes, args.episode_steps),
                     'frames/s'))

    print(f'MUJOCO_GL={os.environ.get("MUJOCO_GL", "(unset)")}, GL renderer {gl_renderer}, '
          f'control period {control_period} s')
    print(f'{"figure":<22}{"image":>10}{"rate":>12}  unit')
    for name, size, rate, unit in rows:
        print(f'{name:<22}{size:>10}{rate:>12.1f}  {unit}')
    return 0
