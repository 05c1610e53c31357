"""Run the lewm_ros stack on Gazebo Sim instead of the bundled MuJoCo simulation.

Gazebo (Harmonic on Jazzy, Ionic on Kilted) simulates the arm of urdf/lewm_arm.urdf with
gz_ros2_control; ros_gz_bridge carries /clock and the scene camera to ROS; the controller
spawners start joint_state_broadcaster and the command controller picked by
``command_interface``; then the perception, planner and actuator nodes start on sim time.

    ros2 launch lewm_ros gazebo.launch.py
    ros2 launch lewm_ros gazebo.launch.py gui:=true command_interface:=joint_trajectory
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lewm_ros.stack import (
    ARGUMENT_DEFAULTS, ARGUMENT_DESCRIPTIONS, COMMAND_INTERFACES, DEFAULT_PARAMS_FILE,
    parse_bool, selected_nodes, URDF_FILE)

PACKAGE = 'lewm_ros'
CONTROLLERS_FILE = 'config/gazebo_controllers.yaml'
CONTROLLER_NAMES = {
    'forward_position': 'forward_position_controller',
    'joint_trajectory': 'joint_trajectory_controller',
}


def launch_setup(context):
    share = get_package_share_directory(PACKAGE)
    gui = parse_bool(LaunchConfiguration('gui').perform(context))
    params_file = (LaunchConfiguration('params_file').perform(context)
                   or os.path.join(share, DEFAULT_PARAMS_FILE))
    command_interface = LaunchConfiguration('command_interface').perform(context)
    node_arguments = {
        'model': LaunchConfiguration('model').perform(context),
        'device': LaunchConfiguration('device').perform(context),
        'command_interface': command_interface,
    }
    with open(os.path.join(share, URDF_FILE), encoding='utf-8') as urdf:
        # gz_ros2_control needs an absolute path to the controllers file.
        robot_description = urdf.read().replace(
            CONTROLLERS_FILE, os.path.join(share, CONTROLLERS_FILE))

    gz_args = '-r -v 3 empty.sdf' if gui else '-r -s -v 3 --headless-rendering empty.sdf'
    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': gz_args}.items(),
    )
    robot_state_publisher = Node(
        package='robot_state_publisher',
        executable='robot_state_publisher',
        parameters=[{'robot_description': robot_description, 'use_sim_time': True}],
        output='screen',
    )
    spawn_robot = Node(
        package='ros_gz_sim',
        executable='create',
        arguments=['-topic', 'robot_description', '-name', 'lewm_arm', '-allow_renaming', 'true'],
        output='screen',
    )
    bridge = Node(
        package='ros_gz_bridge',
        executable='parameter_bridge',
        arguments=[
            '/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
            '/camera/image_raw@sensor_msgs/msg/Image[gz.msgs.Image',
            '/camera/camera_info@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo',
        ],
        parameters=[{'use_sim_time': True}],
        output='screen',
    )
    spawn_controllers = Node(
        package='controller_manager',
        executable='spawner',
        arguments=['joint_state_broadcaster', CONTROLLER_NAMES[command_interface],
                   '--param-file', os.path.join(share, CONTROLLERS_FILE)],
        parameters=[{'use_sim_time': True}],
        output='screen',
    )
    # Controllers can only load once the robot (and its gz_ros2_control plugin) exists.
    start_controllers = RegisterEventHandler(
        OnProcessExit(target_action=spawn_robot, on_exit=[spawn_controllers]))

    lewm_nodes = []
    for spec in selected_nodes(sim=False):
        overrides = {'use_sim_time': True}
        overrides.update({name: node_arguments[name] for name in spec.arguments})
        lewm_nodes.append(Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            parameters=[params_file, overrides],
            output='screen',
        ))
    return [gazebo, robot_state_publisher, spawn_robot, bridge, start_controllers, *lewm_nodes]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'gui', default_value='false', choices=['true', 'false'],
            description='show the Gazebo window; false runs the server headless'),
        DeclareLaunchArgument(
            'model', default_value=ARGUMENT_DEFAULTS['model'],
            description=ARGUMENT_DESCRIPTIONS['model']),
        DeclareLaunchArgument(
            'params_file', default_value='',
            description=(f"{ARGUMENT_DESCRIPTIONS['params_file']} (default: "
                         f'{DEFAULT_PARAMS_FILE})')),
        DeclareLaunchArgument(
            'device', default_value=ARGUMENT_DEFAULTS['device'],
            description=ARGUMENT_DESCRIPTIONS['device']),
        DeclareLaunchArgument(
            'command_interface', default_value=ARGUMENT_DEFAULTS['command_interface'],
            choices=list(COMMAND_INTERFACES),
            description=ARGUMENT_DESCRIPTIONS['command_interface']),
        OpaqueFunction(function=launch_setup),
    ])
