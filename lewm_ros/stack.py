"""The nodes of the lewm_ros stack, listed once.

``launch/robot.launch.py`` and ``lewm bringup`` both build the stack from :data:`NODES`, so the
two ways of starting it cannot drift apart. No ROS imports here: the launch files and the
pip-only bringup all import this module.
"""

from dataclasses import dataclass

# Launch arguments that are also node parameters, with their defaults. Each node receives the
# ones named in its ``arguments``; ``use_sim_time`` reaches every node.
ARGUMENT_DEFAULTS = {
    'use_sim_time': 'true',
    'model': 'models/reach_small',
    'device': 'cpu',
    'command_interface': 'forward_position',
}

ARGUMENT_DESCRIPTIONS = {
    'sim': 'start the bundled MuJoCo simulation (sim_node); false on a real robot',
    'use_sim_time': 'follow /clock instead of the system clock (true with any simulator)',
    'model': 'checkpoint directory (model.safetensors + config.json), absolute or relative '
             'to the package share directory',
    'params_file': 'parameter YAML for every lewm node',
    'device': 'torch device for the world model: cpu, cuda or cuda:N',
    'command_interface': 'ros2_control command path: forward_position (Float64MultiArray to '
                         'a forward position controller) or joint_trajectory (JointTrajectory '
                         'to joint_trajectory_controller)',
    'namespace': 'ROS namespace for every node of the stack (empty for none)',
}

COMMAND_INTERFACES = ('forward_position', 'joint_trajectory')

DEFAULT_PARAMS_FILE = 'config/sim.yaml'
ROBOT_PARAMS_FILE = 'config/robot.yaml'
URDF_FILE = 'urdf/lewm_arm.urdf'


@dataclass(frozen=True)
class NodeSpec:
    """One node of the stack.

    Attributes:
        name: ROS node name; the parameter YAML keys it as ``/**/<name>``.
        executable: console script installed under ``lib/lewm_ros``.
        module: Python module with ``main()``, for starting it without the console script.
        arguments: launch arguments passed to it as parameters (besides ``use_sim_time``).
        sim_only: started only when the ``sim`` argument is true.
    """

    name: str
    executable: str
    module: str
    arguments: tuple[str, ...] = ()
    sim_only: bool = False


NODES = (
    NodeSpec('sim_node', 'sim_node', 'lewm_ros.nodes.sim_node',
             arguments=('command_interface',), sim_only=True),
    NodeSpec('perception_node', 'perception_node', 'lewm_ros.nodes.perception_node',
             arguments=('model', 'device')),
    NodeSpec('planner_node', 'planner_node', 'lewm_ros.nodes.planner_node',
             arguments=('model', 'device')),
    NodeSpec('actuator_node', 'actuator_node', 'lewm_ros.nodes.actuator_node',
             arguments=('command_interface',)),
)


def selected_nodes(sim: bool) -> list[NodeSpec]:
    """Return the nodes to start, without the simulator when ``sim`` is false."""
    return [node for node in NODES if sim or not node.sim_only]


def parse_bool(value: str | bool) -> bool:
    """Parse a launch-style boolean ('true'/'false', any case, or 1/0).

    Raises:
        ValueError: for anything else, naming the value.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'on'):
        return True
    if text in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f'invalid boolean {value!r}: use true or false')


def node_parameters(document: dict, name: str) -> dict:
    """Return the ``ros__parameters`` mapping of node ``name`` in a parsed parameter YAML.

    The shipped files key nodes as ``/**/<name>`` (any namespace); a plain ``<name>`` key is
    accepted too. A missing section is created under ``/**/<name>``, so callers can add
    overrides.
    """
    for key in (f'/**/{name}', name, f'/{name}'):
        if key in document:
            return document[key].setdefault('ros__parameters', {})
    return document.setdefault(f'/**/{name}', {}).setdefault('ros__parameters', {})
