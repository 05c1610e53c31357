"""lewm_ros.paths in a source checkout and in non-editable pip installs."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from lewm_ros import paths

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'lewm_ros'
SOURCE_ITEMS = ('package.xml', 'setup.py', 'setup.cfg', 'resource', 'lewm_ros', 'launch',
                'config', 'urdf', 'models')
DATA_DIRS = ('launch', 'config', 'urdf')
SHARE_DIR_CODE = ('import lewm_ros, lewm_ros.paths as p; '
                  'print(lewm_ros.__file__); print(p.share_dir())')


def test_share_dir_in_source_checkout(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    assert Path(paths.__file__).resolve().is_relative_to(REPO_ROOT), 'not a source checkout'
    assert paths.share_dir() == REPO_ROOT


def test_share_path_joins_parts(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    assert paths.share_path('config', 'x.yaml') == REPO_ROOT / 'config' / 'x.yaml'


def test_resolve_relative_to_share(monkeypatch, tmp_path):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.resolve('package.xml') == REPO_ROOT / 'package.xml'


def test_resolve_prefers_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'package.xml').write_text('<package/>')
    assert paths.resolve('package.xml') == Path('package.xml')


def test_resolve_existing_absolute_path(tmp_path):
    target = tmp_path / 'model.safetensors'
    target.write_bytes(b'')
    assert paths.resolve(str(target)) == target


def test_resolve_missing_absolute_names_path(tmp_path):
    missing = tmp_path / 'no_such_model'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        paths.resolve(missing)


def test_resolve_missing_relative_names_path(monkeypatch, tmp_path):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        paths.resolve('models/no_such_model')
    message = str(raised.value)
    assert 'models/no_such_model' in message
    assert str(REPO_ROOT) in message
    assert str(tmp_path) in message


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """Build a wheel of lewm_ros from a copy of the sources (offline, no build isolation)."""
    root = tmp_path_factory.mktemp('pip_build')
    source = root / 'src'
    source.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for item in SOURCE_ITEMS:
        path = REPO_ROOT / item
        if path.is_dir():
            shutil.copytree(path, source / item, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, source / item)
    # A data directory without files is not installed; give empty ones a placeholder.
    for name in DATA_DIRS:
        (source / name).mkdir(exist_ok=True)
        if not any(p.is_file() for p in (source / name).rglob('*')):
            (source / name / 'placeholder.txt').write_text('empty in the source checkout\n')
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--no-build-isolation',
         '--no-index', '--wheel-dir', str(root / 'dist'), str(source)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (built,) = (root / 'dist').glob('lewm_ros-*.whl')
    return built


@pytest.fixture
def scratch_python(tmp_path) -> Path:
    """Return the interpreter of a new, empty virtual environment.

    Every pip install below targets this interpreter (``pip --python``). Run against the
    project's .venv, ``pip install --prefix`` would first uninstall its editable lewm_ros, and
    against a venv that already has lewm_ros it would install nothing.
    """
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True,
                   timeout=60)
    return venv / 'bin' / 'python'


def _pip_install(scratch_python: Path, wheel: Path, *options: str):
    result = subprocess.run(
        [sys.executable, '-m', 'pip', '--python', str(scratch_python), 'install', '--quiet',
         '--no-deps', '--no-index', *options, str(wheel)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _share_dir_of(python: Path, pythonpath: Path | None = None) -> tuple[Path, Path]:
    env = {key: value for key, value in os.environ.items()
           if key not in ('AMENT_PREFIX_PATH', 'PYTHONPATH')}
    if pythonpath is not None:
        env['PYTHONPATH'] = str(pythonpath)
    result = subprocess.run([str(python), '-c', SHARE_DIR_CODE], cwd=python.anchor, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module_file, share = result.stdout.strip().splitlines()
    return Path(module_file), Path(share)


def _assert_share_contents(share: Path):
    assert (share / 'package.xml').read_bytes() == (REPO_ROOT / 'package.xml').read_bytes()
    for name in DATA_DIRS:
        assert (share / name).is_dir(), f'{share / name} missing'


def test_share_dir_in_venv_pip_install(scratch_python, wheel):
    _pip_install(scratch_python, wheel)
    venv = scratch_python.parent.parent

    module_file, share = _share_dir_of(scratch_python)

    assert module_file.is_relative_to(venv), 'imported the source checkout'
    assert share == venv / 'share' / PACKAGE
    _assert_share_contents(share)


def test_share_dir_in_prefix_pip_install(scratch_python, wheel, tmp_path):
    prefix = tmp_path / 'prefix'
    _pip_install(scratch_python, wheel, '--prefix', str(prefix))
    (site_packages,) = prefix.glob('lib/python3*/site-packages')

    module_file, share = _share_dir_of(scratch_python, pythonpath=site_packages)

    assert module_file.is_relative_to(prefix), 'imported from elsewhere'
    assert share == prefix / 'share' / PACKAGE
    _assert_share_contents(share)


def test_share_dir_in_target_pip_install(scratch_python, wheel, tmp_path):
    target = tmp_path / 'target'
    _pip_install(scratch_python, wheel, '--target', str(target))

    module_file, share = _share_dir_of(scratch_python, pythonpath=target)

    assert module_file.is_relative_to(target), 'imported from elsewhere'
    assert share == target / 'share' / PACKAGE
    _assert_share_contents(share)


def test_share_dir_missing_names_searched_paths(scratch_python, tmp_path):
    # Only the Python package, no data files: the error lists where it looked.
    shutil.copytree(REPO_ROOT / PACKAGE, tmp_path / PACKAGE,
                    ignore=shutil.ignore_patterns('__pycache__'))
    env = {key: value for key, value in os.environ.items()
           if key not in ('AMENT_PREFIX_PATH', 'PYTHONPATH')}
    env['PYTHONPATH'] = str(tmp_path)
    code = 'import lewm_ros.paths as p; p.resolve("config/sim.yaml")'
    result = subprocess.run([str(scratch_python), '-c', code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'FileNotFoundError' in result.stderr
    assert 'config/sim.yaml' in result.stderr
    assert str(tmp_path / 'share' / PACKAGE) in result.stderr
