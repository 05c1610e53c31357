"""package.xml: valid format 3 ament_python manifest that declares what the code imports."""

import ast
import importlib.metadata
from pathlib import Path
import re
import sys

from catkin_pkg.package import parse_package
import pytest

import lewm_ros

REPO_ROOT = Path(__file__).resolve().parent.parent
SCANNED_DIRS = ('lewm_ros', 'launch')

# ROS packages imported from Python without a .msg/.srv/.action submodule.
ROS_PYTHON_PACKAGES = {
    'rclpy', 'launch', 'launch_ros', 'launch_testing', 'ament_index_python', 'cv_bridge',
    'tf2_ros', 'message_filters', 'rosbag2_py', 'robot_state_publisher', 'xacro',
}
# Import name -> rosdep key of a Python dependency that has one on every supported distro.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy',
    'cv2': 'python3-opencv',
    'yaml': 'python3-yaml',
    'h5py': 'python3-h5py',
    'transforms3d': 'python3-transforms3d',
    'matplotlib': 'python3-matplotlib',
    'tqdm': 'python3-tqdm',
    'scipy': 'python3-scipy',
    'PIL': 'python3-pil',
}


@pytest.fixture(scope='module')
def package():
    return parse_package(str(REPO_ROOT / 'package.xml'))


def _setup_call() -> ast.Call:
    tree = ast.parse((REPO_ROOT / 'setup.py').read_text())
    constants = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            constants[node.targets[0].id] = node.value.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup':
            node.constants = constants
            return node
    raise AssertionError('setup.py has no setup(...) call')


def setup_keyword(name: str):
    """Return the value of a literal keyword argument of setup(), resolving module constants."""
    call = _setup_call()
    for keyword in call.keywords:
        if keyword.arg == name:
            if isinstance(keyword.value, ast.Name):
                return call.constants[keyword.value.id]
            return ast.literal_eval(keyword.value)
    raise AssertionError(f'setup() in setup.py has no {name}= argument')


def _optional_imports(tree: ast.AST) -> set[ast.AST]:
    """Return the import statements inside ``try`` blocks that handle their ImportError."""
    handled = {'ImportError', 'ModuleNotFoundError', 'Exception', 'BaseException'}
    optional = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            names.update('BaseException' if t is None else getattr(t, 'id', '') for t in types)
        if names & handled:
            for statement in node.body:
                optional.update(n for n in ast.walk(statement)
                                if isinstance(n, (ast.Import, ast.ImportFrom)))
    return optional


def imported_modules(include_optional: bool = True) -> dict[str, set[str]]:
    """Map each absolute import (dotted name) in the scanned directories to its files.

    With ``include_optional=False``, imports guarded by ``except ImportError`` (or a broader
    handler) are left out: the code runs without them.
    """
    found = {}
    for directory in SCANNED_DIRS:
        for path in sorted((REPO_ROOT / directory).rglob('*.py')):
            tree = ast.parse(path.read_text(), filename=str(path))
            skipped = set() if include_optional else _optional_imports(tree)
            for node in ast.walk(tree):
                if node in skipped:
                    continue
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def ros_packages_imported() -> dict[str, set[str]]:
    packages = {}
    for module, files in imported_modules().items():
        parts = module.split('.')
        is_interface = len(parts) > 1 and parts[1] in ('msg', 'srv', 'action')
        if is_interface or parts[0] in ROS_PYTHON_PACKAGES:
            packages.setdefault(parts[0], set()).update(files)
    return packages


def test_manifest_valid(package):
    package.validate()
    assert package.package_format == 3


def test_build_type_ament_python(package):
    build_types = [export.content for export in package.exports if export.tagname == 'build_type']
    assert build_types == ['ament_python']


def test_name_matches_setup_py(package):
    assert package.name == setup_keyword('name') == 'lewm_ros'


def test_version_matches_setup_py(package):
    assert package.version == setup_keyword('version')
    assert package.version == lewm_ros.__version__


def test_license_matches_setup_py(package):
    assert package.licenses == [setup_keyword('license')]


def test_nodes_import_ros_packages():
    # Guards the scan below: the nodes must be found, or it checks nothing.
    nodes = REPO_ROOT / 'lewm_ros' / 'nodes'
    if not any(nodes.glob('*_node.py')):
        pytest.skip('lewm_ros/nodes has no node module yet')
    node_files = {file for files in ros_packages_imported().values() for file in files}
    assert any(file.startswith('lewm_ros/nodes/') for file in node_files)


def test_imported_ros_packages_are_exec_depends(package):
    declared = {dependency.name for dependency in package.exec_depends}
    missing = {name: sorted(files) for name, files in ros_packages_imported().items()
               if name not in declared}
    assert not missing, f'add <exec_depend> to package.xml for: {missing}'


def test_imported_python_libraries_are_exec_depends(package):
    declared = {dependency.name for dependency in package.exec_depends}
    missing = {}
    for module, files in imported_modules().items():
        key = ROSDEP_KEYS.get(module.split('.')[0])
        if key is not None and key not in declared:
            missing.setdefault(key, set()).update(files)
    assert not missing, f'add <exec_depend> to package.xml for: {missing}'


def test_third_party_imports_in_install_requires():
    # The pip path installs only setup.py's install_requires (plus ROS from requirements.txt).
    required = {re.split(r'[<>=!~\[; ]', spec, maxsplit=1)[0].lower().replace('_', '-')
                for spec in setup_keyword('install_requires')}
    distributions = importlib.metadata.packages_distributions()
    ros_packages = set(ros_packages_imported())
    missing = {}
    for module, files in imported_modules(include_optional=False).items():
        top = module.split('.')[0]
        if top in sys.stdlib_module_names or top == 'lewm_ros' or top in ros_packages:
            continue
        names = {name.lower().replace('_', '-') for name in distributions.get(top, [top])}
        if not names & required:
            missing.setdefault(top, set()).update(files)
    assert not missing, f'add to install_requires in setup.py: {missing}'
