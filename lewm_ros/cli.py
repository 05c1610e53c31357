"""lewm: collect data, train and evaluate world models, bring up the stack, benchmark.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and
``run(args) -> int``. The modules are imported to build the parser, so they keep heavy imports
(torch, mujoco, rclpy) inside ``run`` and ``lewm --help`` stays fast.
"""

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    'collect': ('lewm_ros.data.collect', 'record simulated exploration episodes to HDF5'),
    'import-bag': ('lewm_ros.data.bag_import', 'convert a rosbag2 recording to an HDF5 dataset'),
    'train': ('lewm_ros.training.train', 'train a world model on an HDF5 dataset'),
    'eval': ('lewm_ros.training.evaluate', 'closed-loop reach evaluation in simulation'),
    'bringup': ('lewm_ros.bringup', 'start the ROS 2 stack without ros2 launch'),
    'demo': ('lewm_ros.demo', 'run the whole stack in simulation and report each goal'),
    'bench': ('lewm_ros.bench', 'run a benchmark and print its figures'),
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append an option's default to its help, unless it is None, False or already stated."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += ' (default: %(default)s)'
        return text


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog='lewm', description=__doc__.splitlines()[0])
    parser.add_argument('-v', '--verbose', action='store_true', help='log at DEBUG level')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  formatter_class=DefaultsHelpFormatter)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only tolerate the subcommand's own module (or its package) missing, never a
            # dependency of it.
            if error.name is None or not (module_name + '.').startswith(error.name + '.'):
                raise
            continue
        module.add_arguments(sub)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='[%(levelname)s] [%(name)s] %(message)s')
    if args.command is None:
        parser.print_help()
        return 2
    if args.command not in modules:
        module_name = SUBCOMMANDS[args.command][0]
        logging.getLogger('lewm').error(
            '`lewm %s` is not available in this version: module %s is missing.',
            args.command, module_name)
        return 2
    return int(modules[args.command].run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
