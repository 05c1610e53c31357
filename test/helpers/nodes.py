"""Helpers for tests that run lewm_ros nodes as separate processes."""

import os
from pathlib import Path
import subprocess
import sys

from lewm_ros import paths

SHIPPED_MODEL = 'models/reach_small'
REPO = Path(__file__).resolve().parent.parent.parent


def ros_parameter_arguments(params: dict) -> list[str]:
    """Return ``-p name:=value`` arguments, with lists and booleans in ROS YAML syntax."""
    arguments = []
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            value = '[' + ', '.join(repr(v) if isinstance(v, str) else str(v)
                                    for v in value) + ']'
        elif isinstance(value, bool):
            value = str(value).lower()
        arguments += ['-p', f'{key}:={value}']
    return arguments


def node_env() -> dict:
    """Return the environment of a node process.

    It keeps the calling module's DDS domain (set in os.environ by conftest), discovers on
    loopback only, and imports lewm_ros from this checkout.
    """
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_LOCALHOST_ONLY='1',
               PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    return env


def start_node(module: str, node_name: str, params: dict, env: dict, log_path: Path,
               namespace: str = '') -> subprocess.Popen:
    """Start ``python -m module`` as node ``node_name``; stdout and stderr go to ``log_path``."""
    args = [sys.executable, '-m', module, '--ros-args', '-r', f'__node:={node_name}']
    if namespace:
        args += ['-r', f'__ns:={namespace}']
    args += ros_parameter_arguments(params)
    log = open(log_path, 'w')
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate ``process`` (SIGTERM, then SIGKILL after ``timeout`` s) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prefixed_topics(prefix: str, topics: dict) -> dict:
    """Return ``topics`` with every relative name moved under ``prefix``; absolute ones too."""
    return {key: f"{prefix.rstrip('/')}/{name.lstrip('/')}" for key, name in topics.items()}


def shipped_model() -> Path | None:
    """Return the shipped checkpoint directory, or None when it is not there."""
    try:
        directory = paths.share_path(SHIPPED_MODEL)
    except FileNotFoundError:
        return None
    return directory if (directory / 'config.json').is_file() else None
