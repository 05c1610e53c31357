"""Shared pytest configuration: markers, an isolated ROS 2 domain per module, loopback DDS."""

import os
from pathlib import Path
import shutil
import subprocess
import sys
import zlib

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Rendering goes through EGL on headless machines; set before any test module imports mujoco.
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')

# DDS discovery stays on loopback: ROS_AUTOMATIC_DISCOVERY_RANGE for Iron and newer,
# ROS_LOCALHOST_ONLY for Humble and older.
LOOPBACK_ENV = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_LOCALHOST_ONLY': '1'}

# ROS_DOMAIN_ID 0 is the default of every ROS 2 process, so tests avoid it. The ROS 2 docs
# (Concepts, "The ROS_DOMAIN_ID") advise 0 to 101 on Linux: the DDS ports of higher domains can
# fall into the ephemeral port range.
_DOMAIN_MIN = 1
_DOMAIN_MAX = 101


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs longer than a few seconds (deselect with '
                            '-m "not slow")')
    config.addinivalue_line('markers', 'linter: style check over the source tree')
    config.addinivalue_line('markers', 'ros: starts rclpy processes that talk over DDS')


def domain_id_for(name: str) -> int:
    """Return a ROS_DOMAIN_ID in [1, 101] derived from ``name`` and this process id.

    Two modules running at the same time, in one pytest run or in two runs on one machine,
    share a domain with a probability of 1 in 101. Tests that must not see each other's
    messages should also use unique topic names.
    """
    key = f'{os.getpid()}:{name}'.encode()
    return _DOMAIN_MIN + zlib.crc32(key) % (_DOMAIN_MAX - _DOMAIN_MIN + 1)


@pytest.fixture(scope='module')
def ros_domain_id(request) -> int:
    """ROS_DOMAIN_ID reserved for the requesting test module."""
    return domain_id_for(request.module.__name__)


@pytest.fixture(scope='module', autouse=True)
def _isolated_ros_environment(ros_domain_id):
    """Put in-process rclpy users of each module on their own domain, discovering on loopback.

    rcl reads these variables in ``rclpy.init()``, so they must be set before a test calls it.
    """
    saved = {name: os.environ.get(name) for name in ('ROS_DOMAIN_ID', *LOOPBACK_ENV)}
    os.environ.update(LOOPBACK_ENV, ROS_DOMAIN_ID=str(ros_domain_id))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def ros_env(ros_domain_id) -> dict:
    """Environment for subprocesses that use ROS 2: this module's domain and loopback DDS.

    The interpreter running pytest comes first on PATH, so console scripts of the same virtual
    environment are found.
    """
    env = dict(os.environ)
    env.update(LOOPBACK_ENV, ROS_DOMAIN_ID=str(ros_domain_id), PYTHONUNBUFFERED='1')
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    return env


# What colcon needs to build the package; everything else (.venv, build outputs) stays behind.
SOURCE_ITEMS = ('package.xml', 'setup.py', 'setup.cfg', 'resource', 'lewm_ros', 'launch',
                'config', 'urdf', 'models')
_DATA_DIRS = ('launch', 'config', 'urdf')
BUILD_TIMEOUT_S = 120


def _copy_sources(destination: Path) -> list[str]:
    """Copy the package sources to ``destination``; return the data dirs given a placeholder.

    A data directory without files is not installed at all, so while launch/, config/ or
    urdf/ are still empty the copy gets one placeholder file in each.
    """
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    destination.mkdir(parents=True)
    for item in SOURCE_ITEMS:
        source = REPO_ROOT / item
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, destination / item)
    placeholders = []
    for name in _DATA_DIRS:
        directory = destination / name
        directory.mkdir(exist_ok=True)
        if not any(path.is_file() for path in directory.rglob('*')):
            (directory / 'placeholder.txt').write_text('empty in the source checkout\n')
            placeholders.append(name)
    return placeholders


@pytest.fixture(scope='session')
def colcon_install(tmp_path_factory) -> Path:
    """Return the install prefix of lewm_ros built by colcon in a fresh workspace.

    Built once per test session and shared by the layout and launch-file tests.
    """
    workspace = tmp_path_factory.mktemp('colcon_ws')
    _copy_sources(workspace / 'src' / 'lewm_ros')
    command = [sys.executable, '-m', 'colcon', '--log-base', str(workspace / 'log'), 'build',
               '--base-paths', str(workspace / 'src'),
               '--build-base', str(workspace / 'build'),
               '--install-base', str(workspace / 'install'),
               '--event-handlers', 'console_direct-']
    env = dict(os.environ)
    # A sourced ROS underlay or another workspace must not leak into this build.
    for name in ('AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'PYTHONPATH'):
        env.pop(name, None)
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f'colcon build failed:\n{result.stdout}\n{result.stderr}'
    return workspace / 'install' / 'lewm_ros'


@pytest.fixture(scope='session')
def installed_share(colcon_install) -> Path:
    """Return ``share/lewm_ros`` of the colcon install."""
    return colcon_install / 'share' / 'lewm_ros'
