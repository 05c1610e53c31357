"""ROS 2 Python style: flake8 at line length 99, google import order, pep257 docstrings.

The configuration is the ``[flake8]`` section of setup.cfg, the same one ``make lint`` uses.
"""

from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = pytest.mark.linter

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKED_PATHS = ('lewm_ros', 'test', 'launch', 'setup.py')


def run_flake8(*paths: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    # flake8 reads setup.cfg from the working directory.
    return subprocess.run([sys.executable, '-m', 'flake8', *paths], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_flake8_clean():
    paths = [path for path in CHECKED_PATHS if (REPO_ROOT / path).exists()]
    result = run_flake8(*paths)
    offending = result.stdout.strip().splitlines()
    if result.returncode != 0 or offending:
        files = sorted({line.split(':')[0] for line in offending})
        pytest.fail(
            f'flake8 found {len(offending)} problem(s) in {len(files)} file(s) '
            f'({", ".join(files)}):\n' + '\n'.join(offending) + result.stderr, pytrace=False)


SAMPLE = (
    '"""Sample module."""\n'                                  # line 1
    '\n'
    'import sys\n'                                            # line 3
    'import os\n'                                             # line 4: I100, stdlib order
    '\n'
    'from lewm_ros import paths\n'                            # line 6
    'import numpy\n'                                          # line 7: I100 + I201
    '\n'
    '\n'
    'def long_line():\n'
    '    """Return a line one character longer than allowed"""\n'  # line 11: D400
    f'    return {"x" * 87!r}\n'                               # line 12: 100 chars, E501
    '\n'
    '\n'
    'def fine_line():\n'
    '    """Return a line of exactly 99 characters."""\n'
    f'    return {"x" * 86!r}\n'                               # line 17: 99 chars, allowed
    '\n'
    '\n'
    'print(sys, os, paths, numpy)\n')


def test_flake8_config_active(tmp_path):
    # Guards the test above: if setup.cfg were not read or a plugin were missing, flake8
    # would pass code that breaks the ROS 2 style.
    sample = tmp_path / 'sample.py'
    sample.write_text(SAMPLE)
    lines = SAMPLE.splitlines()
    assert len(lines[11]) == 100
    assert len(lines[16]) == 99

    result = run_flake8(str(sample))
    found = {}
    for line in result.stdout.splitlines():
        _, number, _, message = line.split(':', 3)
        found.setdefault(int(number), []).append(message.split()[0])

    assert result.returncode == 1
    assert 'I100' in found.get(4, []), 'google import order is not checked'
    assert 'I201' in found.get(7, []), 'application-import-names = lewm_ros is not set'
    assert 'D400' in found.get(11, []), 'pep257 docstrings are not checked'
    assert 'E501' in found.get(12, []), 'max-line-length is above 99'
    assert 17 not in found, 'max-line-length is below 99'
    assert set(found) == {4, 7, 11, 12}, result.stdout
