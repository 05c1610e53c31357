"""The ``lewm`` command-line tool: help, missing subcommands and import hygiene."""

import logging
from pathlib import Path
import subprocess
import sys

import pytest

from lewm_ros import cli

LEWM = Path(sys.executable).parent / 'lewm'


def run_lewm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(LEWM), *args], capture_output=True, text=True, timeout=timeout)


def test_console_script_installed():
    assert LEWM.is_file(), f'{LEWM} missing; run `make setup` (pip install -e .)'


def test_help_lists_subcommands():
    result = run_lewm('--help')

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: lewm')
    for name, (_, help_text) in cli.SUBCOMMANDS.items():
        assert f'{name} ' in result.stdout, f'{name} missing from lewm --help'
        assert help_text in result.stdout


def test_no_command_prints_help():
    result = run_lewm()

    assert result.returncode == 2
    assert result.stdout.startswith('usage: lewm')


def test_unknown_command_rejected():
    result = run_lewm('no-such-command')

    assert result.returncode == 2
    assert "invalid choice: 'no-such-command'" in result.stderr


def test_missing_module_message(monkeypatch, caplog):
    monkeypatch.setitem(cli.SUBCOMMANDS, 'ghost', ('lewm_ros.no_such_command', 'not built'))

    with caplog.at_level(logging.ERROR):
        status = cli.main(['ghost'])

    assert status == 2
    assert 'lewm_ros.no_such_command' in caplog.text
    assert '`lewm ghost` is not available' in caplog.text


def test_missing_dependency_raises(monkeypatch, tmp_path):
    # A subcommand whose module exists but fails on a missing dependency must not be hidden
    # as "not available".
    (tmp_path / 'lewm_test_broken_command.py').write_text(
        'import lewm_test_no_such_dependency\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, 'broken', ('lewm_test_broken_command', 'broken'))

    with pytest.raises(ModuleNotFoundError) as raised:
        cli.build_parser()

    assert raised.value.name == 'lewm_test_no_such_dependency'


def test_parser_skips_heavy_imports():
    # Building the parser imports every subcommand module; they must defer torch, mujoco and
    # rclpy to run() so that `lewm --help` starts in well under a second.
    code = ('import sys; from lewm_ros import cli; cli.build_parser(); '
            'print(",".join(m for m in ("torch", "mujoco", "rclpy") if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '', f'imported at parser build time: {result.stdout}'
