"""``lewm bench NAME``: benchmarks that print their figures.

Each benchmark is a module ``lewm_ros.bench.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``. Results are recorded by hand in docs/benchmarks.md with the command,
machine and date.
"""

import importlib
import pkgutil


def _benchmarks() -> dict:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        found[info.name] = importlib.import_module(f'{__name__}.{info.name}')
    return found


def add_arguments(parser) -> None:
    benchmarks = parser.add_subparsers(dest='benchmark', metavar='NAME', required=True)
    for name, module in sorted(_benchmarks().items()):
        summary = (module.__doc__ or name).strip().splitlines()[0]
        module.add_arguments(benchmarks.add_parser(name, help=summary, description=summary))


def run(args) -> int:
    return int(_benchmarks()[args.benchmark].run(args) or 0)
