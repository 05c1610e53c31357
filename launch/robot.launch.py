"""Bring up the lewm_ros stack: camera -> perception -> planner -> actuator -> ros2_control.

In simulation (the default) the bundled MuJoCo arm (sim_node) stands in for the camera driver
and the controllers:

    ros2 launch lewm_ros robot.launch.py

On a real arm, start the camera driver and ros2_control as usual, then:

    ros2 launch lewm_ros robot.launch.py sim:=false use_sim_time:=false \
        params_file:=/path/to/my_robot.yaml command_interface:=joint_trajectory
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushROSNamespace

from lewm_ros.stack import (
    ARGUMENT_DEFAULTS, ARGUMENT_DESCRIPTIONS, COMMAND_INTERFACES, DEFAULT_PARAMS_FILE,
    parse_bool, ROBOT_PARAMS_FILE, selected_nodes, URDF_FILE)

PACKAGE = 'lewm_ros'


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    sim = parse_bool(LaunchConfiguration('sim').perform(context))
    use_sim_time = parse_bool(LaunchConfiguration('use_sim_time').perform(context))
    namespace = LaunchConfiguration('namespace').perform(context)
    params_file = LaunchConfiguration('params_file').perform(context)
    if not params_file:
        params_file = os.path.join(share, DEFAULT_PARAMS_FILE if sim else ROBOT_PARAMS_FILE)
    node_arguments = {
        'model': LaunchConfiguration('model').perform(context),
        'device': LaunchConfiguration('device').perform(context),
        'command_interface': LaunchConfiguration('command_interface').perform(context),
    }
    with open(os.path.join(share, URDF_FILE), encoding='utf-8') as urdf:
        robot_description = urdf.read()

    actions = [PushROSNamespace(namespace)] if namespace else []
    actions.append(Node(
        package='robot_state_publisher',
        executable='robot_state_publisher',
        parameters=[{'robot_description': robot_description, 'use_sim_time': use_sim_time}],
        output='screen',
    ))
    for spec in selected_nodes(sim):
        overrides = {'use_sim_time': use_sim_time}
        overrides.update({name: node_arguments[name] for name in spec.arguments})
        actions.append(Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            parameters=[params_file, overrides],
            output='screen',
        ))
    return [GroupAction(actions)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'sim', default_value='true', choices=['true', 'false'],
            description=ARGUMENT_DESCRIPTIONS['sim']),
        DeclareLaunchArgument(
            'use_sim_time', default_value=ARGUMENT_DEFAULTS['use_sim_time'],
            choices=['true', 'false'], description=ARGUMENT_DESCRIPTIONS['use_sim_time']),
        DeclareLaunchArgument(
            'model', default_value=ARGUMENT_DEFAULTS['model'],
            description=ARGUMENT_DESCRIPTIONS['model']),
        DeclareLaunchArgument(
            'params_file', default_value='',
            description=(f"{ARGUMENT_DESCRIPTIONS['params_file']} (default: "
                         f'{DEFAULT_PARAMS_FILE} when sim is true, else {ROBOT_PARAMS_FILE})')),
        DeclareLaunchArgument(
            'device', default_value=ARGUMENT_DEFAULTS['device'],
            description=ARGUMENT_DESCRIPTIONS['device']),
        DeclareLaunchArgument(
            'command_interface', default_value=ARGUMENT_DEFAULTS['command_interface'],
            choices=list(COMMAND_INTERFACES),
            description=ARGUMENT_DESCRIPTIONS['command_interface']),
        DeclareLaunchArgument(
            'namespace', default_value='', description=ARGUMENT_DESCRIPTIONS['namespace']),
        OpaqueFunction(function=launch_setup),
    ])
