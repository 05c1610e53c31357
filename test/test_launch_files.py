"""Static checks of the launch files.

``launch`` and ``launch_ros`` are not installable from PyPI, so the launch files cannot run in CI.
These tests read them as Python syntax trees and check what a run would find out first: every
declared argument is used and every used one declared, defaults lie within their choices, every
executable exists as a console script of this package or comes from a declared dependency, and
every parameter file, URDF and model named exists in the installed share directory.
"""

import ast
import configparser
import importlib.util
from pathlib import Path
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from lewm_ros import stack

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))


def console_scripts() -> set[str]:
    tree = ast.parse((REPO / 'setup.py').read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = re.fullmatch(r'\s*([\w-]+)\s*=\s*[\w.]+:\w+\s*', node.value)
            if match:
                scripts.add(match.group(1))
    return scripts


def exec_depends() -> set[str]:
    root = ET.parse(REPO / 'package.xml').getroot()
    return {e.text for tag in ('exec_depend', 'depend') for e in root.iter(tag)}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, 'attr', None)
            if called == name:
                found.append(node)
    return found


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def module_constants(tree: ast.Module) -> dict:
    """Return the launch file's module-level ``NAME = 'literal'`` assignments."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    constants[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return constants


def evaluate(node, tree: ast.Module) -> object:
    """Evaluate a launch-file expression built from literals, its constants and lewm_ros.stack."""
    names = {name: getattr(stack, name) for name in dir(stack) if not name.startswith('_')}
    names.update(module_constants(tree))
    builtins = {'list': list, 'str': str}
    return eval(compile(ast.Expression(node), '<launch>', 'eval'), {'__builtins__': builtins},
                names)


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch_file(request) -> tuple[Path, ast.Module]:
    path = request.param
    return path, ast.parse(path.read_text(), filename=str(path))


def test_launch_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert 'robot.launch.py' in names
    assert 'gazebo.launch.py' in names


def test_declared_arguments_are_used(launch_file):
    path, tree = launch_file
    declared = {literal(c.args[0]) for c in calls(tree, 'DeclareLaunchArgument')}
    used = {literal(c.args[0]) for c in calls(tree, 'LaunchConfiguration')}
    assert None not in declared, f'{path.name}: argument names must be string literals'
    assert None not in used, f'{path.name}: LaunchConfiguration names must be string literals'
    assert declared - used == set(), f'{path.name}: declared but never used'
    assert used - declared == set(), f'{path.name}: used but never declared'


def test_arguments_have_descriptions_and_valid_defaults(launch_file):
    path, tree = launch_file
    for call in calls(tree, 'DeclareLaunchArgument'):
        name = literal(call.args[0])
        description = keyword(call, 'description')
        assert description is not None, f'{path.name}: argument {name} has no description'
        assert evaluate(description, tree), f'{path.name}: argument {name}: empty description'
        default = keyword(call, 'default_value')
        assert default is not None, f'{path.name}: argument {name} has no default'
        choices = keyword(call, 'choices')
        if choices is not None:
            assert evaluate(default, tree) in evaluate(choices, tree), (
                f'{path.name}: default of {name} is not one of its choices')


def test_robot_launch_declares_the_documented_arguments():
    tree = ast.parse((REPO / 'launch' / 'robot.launch.py').read_text())
    declared = {literal(c.args[0]) for c in calls(tree, 'DeclareLaunchArgument')}
    expected = {'sim', 'use_sim_time', 'model', 'params_file', 'device', 'command_interface',
                'namespace'}
    assert declared == expected


def test_stack_imports_exist(launch_file):
    path, tree = launch_file
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == 'lewm_ros.stack':
            for alias in node.names:
                assert hasattr(stack, alias.name), f'{path.name}: lewm_ros.stack.{alias.name}'


def test_executables_exist(launch_file):
    path, tree = launch_file
    scripts = console_scripts()
    depends = exec_depends()
    nodes = calls(tree, 'Node')
    assert nodes, f'{path.name} starts no node'
    for call in nodes:
        package = evaluate(keyword(call, 'package'), tree)
        executable = keyword(call, 'executable')
        if package == 'lewm_ros':
            # The lewm nodes come from lewm_ros.stack.NODES (checked below) or are literals.
            name = literal(executable)
            if name is not None:
                assert name in scripts, f'{path.name}: {name} is not a console script'
        else:
            assert package in depends, f'{path.name}: {package} is not an exec_depend'
    for spec in stack.NODES:
        assert spec.executable in scripts, f'{spec.executable} is not a console script'
        assert importlib.util.find_spec(spec.module) is not None, f'{spec.module} is missing'


def test_included_launch_packages_are_dependencies(launch_file):
    path, tree = launch_file
    depends = exec_depends()
    for call in calls(tree, 'get_package_share_directory'):
        package = evaluate(call.args[0], tree)
        assert package == 'lewm_ros' or package in depends, f'{path.name}: {package}'


def test_named_files_are_installed(installed_share):
    named = [stack.DEFAULT_PARAMS_FILE, stack.ROBOT_PARAMS_FILE, stack.URDF_FILE,
             stack.ARGUMENT_DEFAULTS['model']]
    for path in LAUNCH_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            text = literal(node)
            if text and re.fullmatch(r'(config|urdf|models|launch)/[\w./-]+', text):
                named.append(text)
    for relative in named:
        assert (installed_share / relative).exists(), f'{relative} is not installed'
    for path in LAUNCH_FILES:
        assert (installed_share / 'launch' / path.name).is_file()


def test_model_default_is_a_checkpoint(installed_share):
    model = installed_share / stack.ARGUMENT_DEFAULTS['model']
    assert (model / 'config.json').is_file()
    assert (model / 'model.safetensors').is_file()


def test_parameter_files_name_stack_nodes(installed_share):
    node_names = {spec.name for spec in stack.NODES}
    for relative in (stack.DEFAULT_PARAMS_FILE, stack.ROBOT_PARAMS_FILE):
        document = yaml.safe_load((installed_share / relative).read_text())
        assert isinstance(document, dict), relative
        for key, section in document.items():
            # '/**/<node>' matches the node in any namespace (the launch namespace argument).
            node = key.removeprefix('/**/')
            assert node in node_names, f'{relative}: unknown node {key}'
            assert set(section) == {'ros__parameters'}, f'{relative}: {key}'
    robot = yaml.safe_load((installed_share / stack.ROBOT_PARAMS_FILE).read_text())
    assert '/**/sim_node' not in robot, 'the real-robot parameters must not configure the sim'


def test_setup_cfg_installs_scripts_under_lib():
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/lewm_ros'
    assert config['install']['install_scripts'] == '$base/lib/lewm_ros'
