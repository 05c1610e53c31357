"""``lewm bringup``: start the stack as separate processes, for installs without ``ros2 launch``.

It starts the same nodes as ``launch/robot.launch.py`` (both read :mod:`lewm_ros.stack`) with
the same parameter files, forwards Ctrl-C to every node and stops them all when any one exits.
robot_state_publisher is not started because it is not on PyPI. The nodes that need the URDF
get its path as the ``urdf_path`` parameter instead of the ``robot_description`` topic.
"""

import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from lewm_ros import paths
from lewm_ros.stack import (
    ARGUMENT_DEFAULTS, ARGUMENT_DESCRIPTIONS, COMMAND_INTERFACES, DEFAULT_PARAMS_FILE, NodeSpec,
    parse_bool, ROBOT_PARAMS_FILE, selected_nodes, URDF_FILE)

log = logging.getLogger('lewm.bringup')

STOP_TIMEOUT_S = 5.0


def node_command(spec: NodeSpec, params_file: Path, values: dict, namespace: str = '',
                 log_level: str = '') -> list[str]:
    """Return the argv that starts one node with its parameter file and argument overrides."""
    command = [sys.executable, '-m', spec.module, '--ros-args', '-r', f'__node:={spec.name}']
    if namespace:
        command += ['-r', f"__ns:=/{namespace.strip('/')}"]
    command += ['--params-file', str(params_file)]
    command += ['-p', f"use_sim_time:={str(values['use_sim_time']).lower()}"]
    for name in spec.arguments:
        command += ['-p', f'{name}:={values[name]}']
    command += ['-p', f'urdf_path:={paths.share_path(URDF_FILE)}']
    if log_level:
        command += ['--log-level', log_level]
    return command


class Stack:
    """The stack's nodes as child processes, in a context manager that always stops them.

    Args:
        sim: start the simulator node too.
        params_file: parameter YAML; None picks config/sim.yaml or config/robot.yaml.
        values: launch-argument overrides (keys of ``ARGUMENT_DEFAULTS``).
        namespace: ROS namespace for every node.
        env: extra environment variables for the children.
    """

    def __init__(self, sim: bool = True, params_file: str | Path | None = None,
                 values: dict | None = None, namespace: str = '', env: dict | None = None,
                 log_level: str = ''):
        self.values = dict(ARGUMENT_DEFAULTS)
        self.values.update(values or {})
        if self.values['command_interface'] not in COMMAND_INTERFACES:
            raise ValueError(
                f"invalid command_interface {self.values['command_interface']!r}: use one of "
                f'{", ".join(COMMAND_INTERFACES)}')
        parse_bool(self.values['use_sim_time'])
        if params_file is None:
            params_file = paths.share_path(DEFAULT_PARAMS_FILE if sim else ROBOT_PARAMS_FILE)
        self.params_file = paths.resolve(params_file)
        self.nodes = selected_nodes(sim)
        self.namespace = namespace
        self.env = dict(os.environ, **(env or {}))
        self.log_level = log_level
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for spec in self.nodes:
            command = node_command(spec, self.params_file, self.values, self.namespace,
                                   self.log_level)
            log.info('starting %s', spec.name)
            log.debug('%s', ' '.join(command))
            # A session of its own keeps the terminal's Ctrl-C away from the children, so that
            # stop() decides the order and the timeouts.
            self.processes[spec.name] = subprocess.Popen(
                command, env=self.env, start_new_session=True)

    def exited(self) -> dict[str, int]:
        """Return {node name: exit code} for every node that has exited."""
        return {name: process.returncode for name, process in self.processes.items()
                if process.poll() is not None}

    def stop(self) -> None:
        """Send SIGINT to every running node, then SIGKILL to any still alive after a timeout."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning('%s did not stop within %.0f s after SIGINT; killing it',
                            name, STOP_TIMEOUT_S)
                process.kill()
                process.wait()

    def __enter__(self) -> 'Stack':
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def add_arguments(parser) -> None:
    parser.add_argument('--sim', default='true', help=ARGUMENT_DESCRIPTIONS['sim'])
    parser.add_argument('--use-sim-time', default=None,
                        help=ARGUMENT_DESCRIPTIONS['use_sim_time'] + ' (default: same as --sim)')
    parser.add_argument('--model', default=ARGUMENT_DEFAULTS['model'],
                        help=ARGUMENT_DESCRIPTIONS['model'])
    parser.add_argument('--params-file', default=None,
                        help=f"{ARGUMENT_DESCRIPTIONS['params_file']} (default: "
                             f'{DEFAULT_PARAMS_FILE} with --sim true, else {ROBOT_PARAMS_FILE})')
    parser.add_argument('--device', default=ARGUMENT_DEFAULTS['device'],
                        help=ARGUMENT_DESCRIPTIONS['device'])
    parser.add_argument('--command-interface', default=ARGUMENT_DEFAULTS['command_interface'],
                        choices=COMMAND_INTERFACES,
                        help=ARGUMENT_DESCRIPTIONS['command_interface'])
    parser.add_argument('--namespace', default='', help=ARGUMENT_DESCRIPTIONS['namespace'])
    parser.add_argument('--log-level', default='', help='ROS log level of every node, e.g. debug')


def run(args) -> int:
    sim = parse_bool(args.sim)
    use_sim_time = sim if args.use_sim_time is None else parse_bool(args.use_sim_time)
    values = {'use_sim_time': str(use_sim_time).lower(), 'model': args.model,
              'device': args.device, 'command_interface': args.command_interface}
    stack = Stack(sim=sim, params_file=args.params_file, values=values,
                  namespace=args.namespace, log_level=args.log_level)
    status = 0
    with stack:
        try:
            while not stack.exited():
                time.sleep(0.2)
            for name, code in stack.exited().items():
                log.error('%s exited with code %d; stopping the stack', name, code)
            status = 1
        except KeyboardInterrupt:
            log.info('Ctrl-C: stopping the stack')
    return status
