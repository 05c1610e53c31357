"""Locate the package's installed data (launch, config, urdf, models).

Three installs exist: a colcon workspace (share directory in the ament index), a pip install
(``<prefix>/share/lewm_ros`` from ``data_files``) and a source checkout (editable install or
plain ``PYTHONPATH``). Every loader of a config, URDF or model resolves paths through
:func:`share_dir` so the three behave the same.
"""

import os
from pathlib import Path
import sys

PACKAGE_NAME = 'lewm_ros'
_DATA_DIRS = ('launch', 'config', 'urdf')


def _is_share_dir(path: Path) -> bool:
    return (path / 'package.xml').is_file() and all((path / d).is_dir() for d in _DATA_DIRS)


def _ament_share_dir() -> Path | None:
    if not os.environ.get('AMENT_PREFIX_PATH'):
        return None
    try:
        from ament_index_python.packages import get_package_share_directory, PackageNotFoundError
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE_NAME))
    except (PackageNotFoundError, KeyError, ValueError):
        return None


def share_dir() -> Path:
    """Return the directory that contains ``launch/``, ``config/``, ``urdf/`` and ``models/``.

    Search order: the ament index (colcon install, needs ``AMENT_PREFIX_PATH``), the source
    checkout this module was imported from, ``share/lewm_ros`` under the install prefix that
    holds this module, then ``share/lewm_ros`` under the interpreter's prefixes (pip install).

    Raises:
        FileNotFoundError: when none of these locations holds the package data.
    """
    candidates = []
    ament = _ament_share_dir()
    if ament is not None:
        candidates.append(ament)
    module_dir = Path(__file__).resolve().parent
    candidates.append(module_dir.parent)
    # A pip install places the data in <prefix>/share/lewm_ros and the code in
    # <prefix>/lib/pythonX.Y/site-packages/lewm_ros (or <target>/lewm_ros with --target), and
    # <prefix> need not be the running interpreter's prefix (PYTHONPATH, --prefix, --target).
    for ancestor in module_dir.parents[:4]:
        candidates.append(ancestor / 'share' / PACKAGE_NAME)
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, os.path.expanduser('~/.local'))):
        candidates.append(Path(prefix) / 'share' / PACKAGE_NAME)
    candidates = list(dict.fromkeys(candidates))

    for path in candidates:
        if _is_share_dir(path):
            return path
    searched = ', '.join(str(p) for p in candidates)
    raise FileNotFoundError(
        f'lewm_ros data files not found (searched: {searched}). Install the package with '
        '`pip install .` or `colcon build` and source install/setup.bash.')


def share_path(*parts: str) -> Path:
    """Return a path inside the share directory, for example ``config/sim.yaml``."""
    return share_dir().joinpath(*parts)


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a user-given path: absolute or existing paths as given, else relative to share.

    Parameters can therefore name ``models/reach_small`` and work from any working directory.

    Raises:
        FileNotFoundError: when the path exists neither as given nor under the share directory.
    """
    given = Path(os.path.expanduser(str(path)))
    if given.exists():
        return given
    if given.is_absolute():
        raise FileNotFoundError(f'{given} does not exist; check the path')
    try:
        share = share_dir()
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f'{path} not found in the working directory {Path.cwd()}, and the lewm_ros share '
            f'directory is missing: {error}') from error
    shared = share / given
    if shared.exists():
        return shared
    searched = ' or in '.join(str(d) for d in dict.fromkeys((Path.cwd(), share)))
    raise FileNotFoundError(
        f'{path} not found in the working directory {searched}; pass an absolute path')
