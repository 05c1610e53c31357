"""Smoke test of ``lewm bench sim`` with tiny sizes."""

import argparse
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

from lewm_ros.bench import sim  # noqa: E402


def test_bench_sim_prints_figures(capsys):
    parser = argparse.ArgumentParser()
    sim.add_arguments(parser)
    args = parser.parse_args(['--steps', '5', '--image-size', '16', '--episodes', '1',
                              '--episode-steps', '3'])
    assert sim.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = {line[:22].strip(): float(line.split()[-2]) for line in lines[2:]}
    assert set(figures) == {'physics only', 'step + render', 'step + render, no AA',
                            'collect to HDF5'}
    for name, rate in figures.items():
        assert rate > 0, name
