"""Plan latency, FLOPs and throughput of the latent planner on LeWM presets.

Each case builds a randomly initialised LeWM of a preset (eval mode), fixes random history and
goal latents, and plans repeatedly. Between two plans the benchmark reports to the planner that
``--executed-steps`` control steps ran, as in a receding-horizon loop, so warm-started settings
start from the shifted previous plan. Latency is the planner's wall time per plan. FLOPs are
counted with ``torch.utils.flop_counter`` (matrix multiplications and attention) on one rollout
of all candidates and scaled by the iterations.
Random weights give the same cost per plan as trained ones, because the work does not depend on
the values.
"""

import argparse
import logging
import os
import statistics
import time

logger = logging.getLogger(__name__)

# name -> PlannerConfig keyword arguments. 'paper' is the LeWM planning setup; the others trade
# samples and iterations for latency and rely on the warm start.
SETTINGS = {
    'paper': dict(num_samples=300, num_elites=30, iterations=30, warm_start=False),
    'cem-128x6-warm': dict(num_samples=128, num_elites=16, iterations=6),
    'cem-64x5-warm': dict(num_samples=64, num_elites=8, iterations=5),
    'cem-64x3-warm': dict(num_samples=64, num_elites=8, iterations=3),
    'cem-32x4-warm': dict(num_samples=32, num_elites=6, iterations=4),
    'cem-32x3-warm': dict(num_samples=32, num_elites=6, iterations=3),
    'mppi-64x3-warm': dict(method='mppi', num_samples=64, iterations=3, noise_std=0.5),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--presets', nargs='+', default=['small', 'paper'],
                        choices=['small', 'paper'],
                        help='model presets to measure (default: small paper)')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS),
                        choices=list(SETTINGS), metavar='NAME',
                        help=f'planner settings to measure, from {", ".join(SETTINGS)} '
                             '(default: all)')
    parser.add_argument('--horizon', type=int, default=5, help='plan length in blocks')
    parser.add_argument('--repeats', type=int, default=30,
                        help='plans timed per case, unless --max-seconds runs out first')
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='time budget per case in seconds; at least one plan is timed')
    parser.add_argument('--executed-steps', type=int, default=1,
                        help='control steps executed between two plans (1 = replan every '
                             'step)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (0 keeps the torch default)')
    parser.add_argument('--seed', type=int, default=0, help='seed of weights and latents')


def _percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _measure(preset: str, setting: str, args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lewm_ros.model import LeWM, ModelConfig
    from lewm_ros.planning import ActionBounds, Planner, PlannerConfig

    torch.manual_seed(args.seed)
    model = LeWM(ModelConfig.preset(preset)).eval()
    config = model.config
    generator = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(config.history, config.latent_dim, generator=generator)
    actions = 0.01 * torch.randn((config.history - 1) * config.frameskip, config.action_dim,
                                 generator=generator)
    goal = torch.randn(config.latent_dim, generator=generator)
    planner = Planner(model, PlannerConfig(horizon=args.horizon, seed=args.seed,
                                           **SETTINGS[setting]),
                      bounds=ActionBounds.symmetric(0.05, config.action_dim))

    # FLOPs of one plan: one rollout of all candidates per iteration, plus the rollout of the
    # returned plan. The rollout cost does not depend on the action values, and this rollout
    # also warms up the allocator before timing.
    settings = planner.config
    candidates = torch.randn(settings.num_samples, settings.horizon, config.action_block_dim,
                             generator=generator)
    past = planner.scaler.actions_to_blocks(actions)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.rollout(latents, candidates, past)
    flops = settings.iterations * counter.get_total_flops()
    if settings.evaluate_plan:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.rollout(latents, candidates[:1], past)
        flops += counter.get_total_flops()

    times = []
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    deadline = wall_start + args.max_seconds
    while len(times) < args.repeats and (not times or time.perf_counter() < deadline):
        result = planner.plan(latents, goal, actions)
        planner.record_executed(args.executed_steps)
        times.append(result.stats['wall_time_s'])
    # CPU time over wall time: 1.0 per thread is an idle machine, less means other processes
    # took the cores.
    cpu_share = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    median = statistics.median(times)
    return dict(preset=preset, setting=setting, plans=len(times), median_ms=1e3 * median,
                p95_ms=1e3 * _percentile(times, 0.95), rate_hz=1.0 / median,
                gflop=flops / 1e9, gflops=flops / 1e9 / median, cpu_share=cpu_share,
                candidates=result.stats['candidates_evaluated'],
                predictor_calls=result.stats['predictor_calls'])


def run(args) -> int:
    import torch

    if args.repeats < 1 or args.max_seconds < 0 or args.executed_steps < 0 or args.threads < 0:
        logger.error('invalid arguments: --repeats must be >= 1 (got %s), --max-seconds, '
                     '--executed-steps and --threads >= 0 (got %s, %s, %s)', args.repeats,
                     args.max_seconds, args.executed_steps, args.threads)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{os.cpu_count()} CPUs, load average {load:.2f} at start; horizon '
          f'{args.horizon} blocks, {args.executed_steps} step(s) executed between plans')
    header = (f'{"preset":<7} {"setting":<16} {"plans":>5} {"median ms":>10} {"p95 ms":>9} '
              f'{"rate Hz":>8} {"GFLOP/plan":>11} {"GFLOP/s":>8} {"candidates":>10} '
              f'{"pred calls":>10} {"CPU share":>9}')
    print(header)
    for preset in args.presets:
        for setting in args.settings:
            row = _measure(preset, setting, args)
            print(f'{row["preset"]:<7} {row["setting"]:<16} {row["plans"]:>5} '
                  f'{row["median_ms"]:>10.1f} {row["p95_ms"]:>9.1f} {row["rate_hz"]:>8.3g} '
                  f'{row["gflop"]:>11.2f} {row["gflops"]:>8.1f} {row["candidates"]:>10} '
                  f'{row["predictor_calls"]:>10} {row["cpu_share"]:>9.2f}', flush=True)
    return 0
