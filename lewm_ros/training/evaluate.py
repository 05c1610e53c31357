"""``lewm eval``: closed-loop evaluation of a model on the visual reach task, without ROS.

Runs the world-model planner and two baselines (random actions, and an oracle that is given the
goal joint positions) on the same episodes of :mod:`lewm_ros.training.reach`, then prints a
markdown table and writes ``eval.json``, ``eval.md`` and optionally a GIF (MP4 when
imageio-ffmpeg is installed) of a few episodes with the goal image beside the camera view.

The default planning setup is the one recorded in the shipped model card. ``--paper`` selects
the LeWM evaluation setup instead: CEM 300 x 30, horizon 5 blocks, the whole plan executed
before replanning, one observed latent, final-step cost only.
"""

import argparse
import json
import logging
from pathlib import Path
import time

logger = logging.getLogger(__name__)

DEFAULT_MODEL = ('models', 'reach_small')
CONTROLLERS = ('lewm', 'random', 'oracle')

# Planning setup used with the shipped model (see models/reach_small/MODEL_CARD.md); the
# ROS planner node takes the same values from config/sim.yaml.
DEFAULT_PLANNING = {
    'method': 'cem', 'horizon': 5, 'samples': 128, 'elites': 16, 'iterations': 6,
    'replan_every': 5, 'history': 1, 'step_weight': 1.0, 'action_weight': 0.0,
    'warm_start': True, 'hold_margin': 0.1,
}
PAPER_PLANNING = {
    'method': 'cem', 'horizon': 5, 'samples': 300, 'elites': 30, 'iterations': 30,
    'replan_every': 25, 'history': 1, 'step_weight': 0.0, 'action_weight': 0.0,
    'warm_start': True, 'hold_margin': 0.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', default=None,
                        help='checkpoint directory (default: the shipped models/reach_small)')
    parser.add_argument('-o', '--output', default=None,
                        help='directory for eval.json, eval.md and the video')
    parser.add_argument('--episodes', type=int, default=50, help='reach episodes')
    parser.add_argument('--seed', type=int, default=1000,
                        help='seed of the episodes; use one the training data never used '
                             '(default 1000)')
    parser.add_argument('--goal-offset', type=int, default=25,
                        help='exploration steps from start to goal')
    parser.add_argument('--budget', type=int, default=None,
                        help='control steps per episode (default: twice the goal offset)')
    parser.add_argument('--radius', type=float, default=0.05,
                        help='end-effector distance that counts as reached, metres')
    parser.add_argument('--policy', default='waypoint',
                        help='exploration policy that makes start and goal states (waypoint)')
    parser.add_argument('--controllers', default=','.join(CONTROLLERS),
                        help='comma-separated controllers to run: lewm, random, oracle '
                             '(default all)')
    planning = parser.add_argument_group('planning (defaults: the shipped model card setup)')
    planning.add_argument('--paper', action='store_true',
                          help='use the LeWM evaluation setup; options below still override')
    planning.add_argument('--method', choices=('cem', 'mppi'), default=None)
    planning.add_argument('--horizon', type=int, default=None, help='plan length in blocks')
    planning.add_argument('--samples', type=int, default=None, help='candidates per iteration')
    planning.add_argument('--elites', type=int, default=None, help='CEM elites')
    planning.add_argument('--iterations', type=int, default=None, help='optimiser iterations')
    planning.add_argument('--replan-every', type=int, default=None,
                          help='control steps executed from each plan before replanning')
    planning.add_argument('--history', type=int, default=None,
                          help='observed latents per plan, frameskip steps apart')
    planning.add_argument('--step-weight', type=float, default=None,
                          help='weight of the per-step goal distances in the cost')
    planning.add_argument('--action-weight', type=float, default=None,
                          help='weight of the summed squared joint deltas (rad^2)')
    planning.add_argument('--warm-start', choices=('on', 'off'), default=None,
                          help='start each plan from the rest of the previous one')
    planning.add_argument('--hold-margin', type=float, default=None,
                          help='hold still unless the plan costs this fraction less than '
                               'holding still (0 disables)')
    parser.add_argument('--video', type=int, default=0, metavar='N',
                        help='record the first N episodes of each controller (default 0)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads (default: torch default)')


def planning_settings(args) -> dict:
    """Merge the chosen base setup (default or ``--paper``) with the explicit options."""
    settings = dict(PAPER_PLANNING if args.paper else DEFAULT_PLANNING)
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = (value == 'on') if key == 'warm_start' else value
    return settings


def build_controllers(names, model, planning: dict, env, seed: int) -> list:
    """Create the requested controllers; the planner's action bounds are the env's."""
    from lewm_ros.planning import ActionBounds, PlannerConfig
    from lewm_ros.training.controllers import (OracleController, PlannerController,
                                               PlanningSetup, RandomController)

    controllers = []
    for name in names:
        if name == 'lewm':
            if model is None:
                raise ValueError('the lewm controller needs a model')
            config = PlannerConfig(method=planning['method'], horizon=planning['horizon'],
                                   num_samples=planning['samples'],
                                   num_elites=planning['elites'],
                                   iterations=planning['iterations'],
                                   warm_start=planning['warm_start'],
                                   hold_margin=planning['hold_margin'], seed=seed)
            setup = PlanningSetup(replan_every=planning['replan_every'],
                                  history=planning['history'],
                                  step_weight=planning['step_weight'],
                                  action_weight=planning['action_weight'])
            bounds = ActionBounds.symmetric(env.max_delta.tolist())
            controllers.append(PlannerController(model, config, setup, bounds))
        elif name == 'random':
            controllers.append(RandomController(seed=seed))
        elif name == 'oracle':
            controllers.append(OracleController())
        else:
            raise ValueError(f'unknown controller {name!r}; choose from {", ".join(CONTROLLERS)}')
    return controllers


def summarise(results: list[dict]) -> dict:
    """Aggregate per-episode results of one controller."""
    import numpy as np

    final = np.array([r['final_distance'] for r in results])
    best = np.array([r['best_distance'] for r in results])
    plans = np.array([r['stats'].get('plans', 0) for r in results])
    times = [t for r in results for t in r['stats'].get('plan_times_s', [])]
    first = [r['first_success_step'] for r in results if r['first_success_step'] is not None]
    summary = {
        'episodes': len(results),
        'success_rate': float(np.mean([r['success'] for r in results])),
        'stay_rate': float(np.mean([r['stayed'] for r in results])),
        'final_distance_mean': float(final.mean()),
        'final_distance_median': float(np.median(final)),
        'best_distance_mean': float(best.mean()),
        'first_success_step_median': float(np.median(first)) if first else None,
        'plans_per_episode': float(plans.mean()),
        'plan_time_mean_s': float(np.mean(times)) if times else None,
        'plan_time_p95_s': float(np.percentile(times, 95)) if times else None,
    }
    return summary


def markdown_table(summaries: dict, radius: float) -> str:
    """Render the controller summaries as a markdown table (distances in cm)."""
    centimetres = radius * 100
    lines = [
        f'| controller | reached (< {centimetres:g} cm at any step) | reached and stayed '
        '(< radius at the end) | final distance, cm (mean / median) | best distance, cm '
        '(mean) | first success step (median) | plans per episode | plan latency, ms '
        '(mean / p95) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name, s in summaries.items():
        count = s['episodes']
        reached = round(s['success_rate'] * count)
        stayed = round(s['stay_rate'] * count)
        latency = '-'
        if s['plan_time_mean_s'] is not None:
            latency = f'{s["plan_time_mean_s"] * 1e3:.0f} / {s["plan_time_p95_s"] * 1e3:.0f}'
        first = s['first_success_step_median']
        lines.append(
            f'| {name} | {reached}/{count} ({s["success_rate"]:.0%}) | {stayed}/{count} '
            f'({s["stay_rate"]:.0%}) | {s["final_distance_mean"] * 100:.1f} / '
            f'{s["final_distance_median"] * 100:.1f} | {s["best_distance_mean"] * 100:.1f} | '
            f'{"-" if first is None else f"{first:g}"} | {s["plans_per_episode"]:.1f} | '
            f'{latency} |')
    return '\n'.join(lines) + '\n'


def write_video(path, recordings: list[dict], radius: float, scale: int = 3) -> Path:
    """Write episodes as camera view | goal image, one frame per control step.

    Writes MP4 when ``path`` ends in ``.mp4`` (needs imageio-ffmpeg), else GIF.
    """
    import cv2
    import imageio.v2 as imageio
    import numpy as np

    frames = []
    for recording in recordings:
        goal = recording['goal_image']
        size = goal.shape[0] * scale
        goal_big = cv2.resize(goal, (size, size), interpolation=cv2.INTER_NEAREST)
        distances = [recording['start_distance'], *recording['distances']]
        for step, frame in enumerate(recording['frames']):
            view = cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST)
            canvas = np.full((size + 24, 2 * size + 6, 3), 255, dtype=np.uint8)
            canvas[24:, :size] = view
            canvas[24:, size + 6:] = goal_big
            distance = distances[min(step, len(distances) - 1)]
            colour = (0, 140, 0) if distance < radius else (200, 0, 0)
            label = (f'{recording["controller"]} ep {recording["episode"]} step {step} '
                     f'd {distance * 100:.1f} cm')
            cv2.putText(canvas, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                        cv2.LINE_AA)
            cv2.putText(canvas, 'goal', (size + 10, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)
            frames.append(canvas)
    path = Path(path)
    if path.suffix == '.mp4':
        imageio.mimsave(path, frames, fps=10)
    else:
        imageio.mimsave(path, frames, duration=0.1, loop=0)
    logger.info('wrote %d video frames to %s', len(frames), path)
    return path


def video_path(output: Path) -> Path:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return output / 'episodes.gif'
    return output / 'episodes.mp4'


def evaluate(model, names, task, planning: dict, episodes: int, seed: int,
             image_size: int, video: int = 0) -> dict:
    """Run every controller on the same episodes and return results and summaries."""
    from lewm_ros.sim import ArmEnv
    from lewm_ros.training.reach import run_episode, sample_episodes

    env = ArmEnv(image_size=image_size)
    try:
        specs = sample_episodes(env, task, episodes, seed)
        controllers = build_controllers(names, model, planning, env, seed)
        results, summaries, recordings = {}, {}, []
        for controller in controllers:
            rows = []
            start = time.perf_counter()
            for spec in specs:
                record = spec.index < video
                row = run_episode(env, spec, controller, task, record_frames=record)
                if record:
                    recordings.append({'controller': controller.name, **row})
                    row = {k: v for k, v in row.items() if k not in ('frames', 'goal_image')}
                rows.append(row)
            results[controller.name] = rows
            summaries[controller.name] = summarise(rows)
            logger.info('%s: reached %.0f %%, stayed %.0f %% over %d episodes in %.0f s',
                        controller.name, 100 * summaries[controller.name]['success_rate'],
                        100 * summaries[controller.name]['stay_rate'], len(rows),
                        time.perf_counter() - start)
    finally:
        env.close()
    return {'results': results, 'summaries': summaries, 'recordings': recordings}


def _check_seed(model, seed: int) -> None:
    """Warn when the episode seed equals the seed of the model's training data."""
    from lewm_ros.data.episodes import read_metadata

    data = (getattr(model, 'checkpoint_info', {}).get('metadata', {})
            .get('training', {}).get('data')) or []
    for path in [data] if isinstance(data, str) else data:
        if Path(path).is_file() and read_metadata(path).get('seed') == seed:
            logger.warning('episode seed %d is the seed of the training data %s; the start '
                           'states are then not held out', seed, path)


def run(args) -> int:
    import platform

    import torch

    from lewm_ros.model import CheckpointError, load_checkpoint
    from lewm_ros.paths import share_path
    from lewm_ros.training.reach import ReachTask

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.controllers.split(',') if name.strip()]
    unknown = [name for name in names if name not in CONTROLLERS]
    if unknown or not names:
        logger.error('--controllers %r is invalid; choose from %s', args.controllers,
                     ', '.join(CONTROLLERS))
        return 2
    try:
        task = ReachTask(goal_offset=args.goal_offset,
                         budget=args.budget or 2 * args.goal_offset,
                         success_radius=args.radius, policy=args.policy)
    except ValueError as error:
        logger.error('%s', error)
        return 2
    if args.episodes < 1:
        logger.error('--episodes must be >= 1, got %d', args.episodes)
        return 2
    planning = planning_settings(args)

    model, model_path = None, None
    image_size = 64
    if 'lewm' in names:
        model_path = Path(args.model) if args.model else share_path(*DEFAULT_MODEL)
        try:
            model = load_checkpoint(model_path, device=args.device)
        except CheckpointError as error:
            logger.error('%s', error)
            return 2
        image_size = model.config.image_size
        _check_seed(model, args.seed)

    try:
        outcome = evaluate(model, names, task, planning, args.episodes, args.seed, image_size,
                           video=args.video)
    except ValueError as error:
        logger.error('%s', error)
        return 2
    table = markdown_table(outcome['summaries'], task.success_radius)
    print(table, end='')

    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        document = {
            'model': str(model_path) if model_path else None,
            'task': task.to_dict(), 'episodes': args.episodes, 'seed': args.seed,
            'planning': planning, 'summaries': outcome['summaries'],
            'results': outcome['results'],
            'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                        'torch': torch.__version__, 'threads': torch.get_num_threads(),
                        'device': args.device},
        }
        (output / 'eval.json').write_text(json.dumps(document, indent=1) + '\n')
        header = (f'Reach task: {args.episodes} episodes, seed {args.seed}, goal offset '
                  f'{task.goal_offset} steps, budget {task.budget} steps, radius '
                  f'{task.success_radius * 100:g} cm. Planning: {json.dumps(planning)}.\n\n')
        (output / 'eval.md').write_text(header + table)
        if outcome['recordings']:
            write_video(video_path(output), outcome['recordings'], task.success_radius)
    return 0
