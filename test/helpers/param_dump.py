"""Start a node, declare a fixed set of parameters and print their values as JSON.

Run by test_dds_smoke.py with a YAML file, the way launch passes one:

    param_dump.py --name perception_node --ros-args --params-file params.yaml

Undeclared names in the YAML are ignored, as in any node that does not allow undeclared
parameters.
"""

import argparse
import json
import sys

import rclpy
from rclpy.node import Node

DEFAULTS = {
    'control_rate': 10.0,
    'horizon': 5,
    'enabled': False,
    'model_path': '',
    'joint_names': ['none'],
    'action_bounds': [0.0],
}


def main() -> int:
    rclpy.init(args=sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--name', required=True, help='node name')
    args = parser.parse_args(rclpy.utilities.remove_ros_args(sys.argv)[1:])
    node = Node(args.name)
    try:
        values = {name: node.declare_parameter(name, default).value
                  for name, default in DEFAULTS.items()}
        values['use_sim_time'] = node.get_parameter('use_sim_time').value
        print(json.dumps(values))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
