"""Build the package with colcon into a temporary workspace and check the install layout."""

import ast
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'lewm_ros'
DATA_DIRS = ('launch', 'config', 'urdf')


def console_scripts() -> list[str]:
    """Return the executable names declared in setup.py's ``console_scripts``."""
    tree = ast.parse((REPO_ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    specs = ast.literal_eval(value)
                    return [spec.split('=')[0].strip() for spec in specs]
    raise AssertionError('setup.py declares no console_scripts entry point')


def _site_packages(prefix: Path) -> Path:
    version = f'python{sys.version_info.major}.{sys.version_info.minor}'
    return prefix / 'lib' / version / 'site-packages'


def test_share_data_dirs_installed(colcon_install):
    share = colcon_install / 'share' / PACKAGE
    for name in DATA_DIRS:
        assert (share / name).is_dir(), f'{share / name} missing'
    assert (share / 'package.xml').read_bytes() == (REPO_ROOT / 'package.xml').read_bytes()


def test_ament_index_marker_installed(colcon_install):
    marker = colcon_install / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file()


def test_source_data_files_installed(colcon_install):
    # Every file under the real data directories lands at the same relative path in share.
    share = colcon_install / 'share' / PACKAGE
    for name in (*DATA_DIRS, 'models'):
        source_dir = REPO_ROOT / name
        if not source_dir.is_dir():
            continue
        for path in source_dir.rglob('*'):
            if path.is_file() and '__pycache__' not in path.parts:
                relative = path.relative_to(REPO_ROOT)
                assert (share / relative).is_file(), f'{relative} not installed under {share}'


def test_python_package_installed(colcon_install):
    package_dir = _site_packages(colcon_install) / PACKAGE
    assert (package_dir / '__init__.py').is_file()
    assert (package_dir / 'paths.py').is_file()
    assert not (package_dir.parent / 'test').exists(), 'the test directory was installed'


@pytest.mark.parametrize('executable', console_scripts())
def test_executable_installed_with_build_interpreter(colcon_install, executable):
    # ros2 run and launch_ros look in lib/<package>, and the script must run with the
    # interpreter that has torch and rclpy, not whatever python3 is first on PATH.
    script = colcon_install / 'lib' / PACKAGE / executable
    assert script.is_file(), f'{script} missing; check [install] install_scripts in setup.cfg'
    assert os.access(script, os.X_OK), f'{script} is not executable'
    first_line = script.read_text().splitlines()[0]
    assert first_line == f'#!{sys.executable}'


def test_expected_executables_declared():
    expected = {'perception_node', 'planner_node', 'actuator_node', 'sim_node', 'lewm'}
    assert expected <= set(console_scripts())


def _run_in_install(colcon_install, code: str, **extra_env) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env['PYTHONPATH'] = str(_site_packages(colcon_install))
    env.pop('AMENT_PREFIX_PATH', None)
    env.update(extra_env)
    return subprocess.run([sys.executable, '-c', code], cwd=colcon_install.parent, env=env,
                          capture_output=True, text=True, timeout=60)


SHARE_DIR_CODE = ('import lewm_ros, lewm_ros.paths as p; '
                  'print(lewm_ros.__file__); print(p.share_dir())')


def test_share_dir_found_through_ament_index(colcon_install):
    code = SHARE_DIR_CODE + ('; from ament_index_python.packages import '
                             'get_package_share_directory as g; print(g("lewm_ros"))')
    result = _run_in_install(colcon_install, code, AMENT_PREFIX_PATH=str(colcon_install))
    assert result.returncode == 0, result.stderr
    module_file, share, ament_share = result.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(colcon_install), 'imported the source checkout'
    assert Path(share) == colcon_install / 'share' / PACKAGE
    assert Path(ament_share) == colcon_install / 'share' / PACKAGE


def test_share_dir_found_without_ament_prefix_path(colcon_install):
    # Running an installed script without sourcing setup.bash still finds the data.
    result = _run_in_install(colcon_install, SHARE_DIR_CODE)
    assert result.returncode == 0, result.stderr
    module_file, share = result.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(colcon_install), 'imported the source checkout'
    assert Path(share) == colcon_install / 'share' / PACKAGE


def test_lewm_script_runs_from_install(colcon_install):
    env = dict(os.environ)
    env['PYTHONPATH'] = str(_site_packages(colcon_install))
    env['AMENT_PREFIX_PATH'] = str(colcon_install)
    result = subprocess.run([str(colcon_install / 'lib' / PACKAGE / 'lewm'), '--help'],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: lewm')
