"""Full stack in simulation: camera-to-command latency and sustained control rate.

Starts the four nodes as ``lewm demo`` does, sends one goal and, after a warm-up, watches the
topics from a separate process for ``--duration`` wall-clock seconds. Every plan carries the
stamp of the camera frame it was computed from, so the latency of a frame is the time from the
receipt of that frame to the receipt of the first actuator command after the plan made from it.
Commands of the forward position interface carry no stamp, so this pairing by arrival order is
the measurement; it includes up to one actuator period of waiting for the next command tick.
"""

import json
import logging
import statistics
import time

log = logging.getLogger('lewm.bench.stack')


def add_arguments(parser) -> None:
    parser.add_argument('--model', default='models/reach_small',
                        help='checkpoint directory, absolute or relative to the package share')
    parser.add_argument('--duration', type=float, default=30.0,
                        help='measured wall-clock seconds after the warm-up (default 30)')
    parser.add_argument('--warmup', type=float, default=5.0,
                        help='wall-clock seconds after the goal before measuring (default 5)')
    parser.add_argument('--params-file', default=None,
                        help='parameter YAML (default: config/sim.yaml)')
    parser.add_argument('--command-interface', default='forward_position',
                        choices=('forward_position', 'joint_trajectory'),
                        help='ros2_control command path between actuator and simulator')
    parser.add_argument('--json', default=None, metavar='PATH',
                        help='also write the figures to this JSON file')


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(monitor, duration: float) -> dict:
    """Watch the running stack for ``duration`` s; return latency and rate figures.

    Latencies are in milliseconds of wall-clock time, rates in messages per wall-clock second.
    """
    with monitor.lock:
        plans_before = len(monitor.plans)
        commands_before = len(monitor.commands)
        latents_before = monitor.latents
        images_before = len(monitor.image_times)
        sim_before = monitor.sim_time
    start = time.monotonic()
    time.sleep(duration)
    end = time.monotonic()
    # Let the commands that follow the last plans arrive.
    time.sleep(0.5)
    with monitor.lock:
        plans = monitor.plans[plans_before:]
        commands = list(monitor.commands)
        command_count = len(monitor.commands) - commands_before
        latents = monitor.latents - latents_before
        images = len(monitor.image_times) - images_before
        image_times = dict(monitor.image_times)
        sim_after = monitor.sim_time
    elapsed = end - start

    to_plan, to_command = [], []
    for received, stamp in plans:
        if received > end:
            break
        frame = image_times.get(stamp)
        if frame is None:
            # The stamp grid is 0.1 s; a float round trip may differ in the last digit.
            matches = [t for s, t in image_times.items() if abs(s - stamp) < 1e-6]
            frame = matches[0] if matches else None
        if frame is None:
            continue
        to_plan.append(1e3 * (received - frame))
        following = [t for t in commands if t >= received]
        if following:
            to_command.append(1e3 * (following[0] - frame))
    figures = {
        'duration_s': round(elapsed, 2),
        'plans': len(plans),
        'plan_rate_hz': round(len(plans) / elapsed, 2),
        'command_rate_hz': round(command_count / elapsed, 2),
        'latent_rate_hz': round(latents / elapsed, 2),
        'camera_rate_hz': round(images / elapsed, 2) if images > 0 else None,
        'real_time_factor': round((sim_after - sim_before) / elapsed, 3),
    }
    for name, values in (('camera_to_plan_ms', to_plan), ('camera_to_command_ms', to_command)):
        if values:
            figures[name] = {'median': round(statistics.median(values), 1),
                             'p95': round(_percentile(values, 0.95), 1),
                             'max': round(max(values), 1), 'samples': len(values)}
        else:
            figures[name] = None
    return figures


def run(args) -> int:
    from lewm_ros.demo import stop_on_sigterm

    return stop_on_sigterm(run_benchmark, args)


def run_benchmark(args) -> int:
    """Start the stack, measure and print the figures; return the exit status."""
    import os
    from pathlib import Path

    from lewm_ros.bringup import Stack
    from lewm_ros.demo import check_model, GOALS, StackError, StackMonitor, wait_until_ready

    os.environ.setdefault('MUJOCO_GL', 'egl')
    try:
        model = check_model(args.model)
    except StackError as error:
        log.error('%s', error)
        return 1
    values = {'model': str(model), 'command_interface': args.command_interface,
              'use_sim_time': 'true'}
    stack = Stack(sim=True, params_file=args.params_file, values=values, log_level='warn')
    monitor = None
    try:
        stack.start()
        monitor = StackMonitor()
        wait_until_ready(stack, monitor)
        monitor.send_goal(GOALS[0])
        time.sleep(args.warmup)
        figures = measure(monitor, args.duration)
        exited = stack.exited()
        if exited:
            raise StackError(f'nodes died during the measurement: {exited}')
    except StackError as error:
        log.error('%s', error)
        return 1
    except KeyboardInterrupt:
        log.warning('interrupted; no figures')
        return 130
    finally:
        if monitor is not None:
            monitor.close()
        stack.stop()

    figures['model'] = str(model)
    figures['command_interface'] = args.command_interface
    print(f'stack benchmark over {figures["duration_s"]} s (model {model}, '
          f'{args.command_interface})')
    for name in ('camera_to_plan_ms', 'camera_to_command_ms'):
        value = figures[name]
        if value is None:
            print(f'  {name:<22} no samples')
        else:
            print(f'  {name:<22} median {value["median"]:.0f} ms, p95 {value["p95"]:.0f} ms, '
                  f'max {value["max"]:.0f} ms ({value["samples"]} plans)')
    for name in ('plan_rate_hz', 'command_rate_hz', 'latent_rate_hz', 'camera_rate_hz',
                 'real_time_factor'):
        print(f'  {name:<22} {figures[name]}')
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + '\n')
    return 0
