"""Tests of ``lewm eval``: the reach task, the baselines, the tables and the shipped model."""

import argparse
import json

import numpy as np
import pytest
import yaml

from lewm_ros import cli
from lewm_ros.paths import share_path
from lewm_ros.sim import ArmEnv
from lewm_ros.stack import node_parameters
from lewm_ros.training.controllers import OracleController, RandomController
from lewm_ros.training.evaluate import (add_arguments, DEFAULT_PLANNING, markdown_table,
                                        PAPER_PLANNING, planning_settings, summarise)
from lewm_ros.training.reach import ReachTask, run_episode, sample_episodes

SHIPPED_MODEL = share_path('models', 'reach_small')


@pytest.fixture(scope='module')
def env():
    with ArmEnv(image_size=32) as environment:
        yield environment


def test_episodes_reproducible_and_held_apart(env):
    task = ReachTask()
    first = sample_episodes(env, task, 4, seed=7)
    second = sample_episodes(env, task, 4, seed=7)
    other = sample_episodes(env, task, 4, seed=8)
    for a, b in zip(first, second):
        assert np.array_equal(a.start_qpos, b.start_qpos)
        assert np.array_equal(a.goal_qpos, b.goal_qpos)
    assert not np.array_equal(first[0].goal_qpos, other[0].goal_qpos)
    for episode in first:
        assert episode.start_distance >= task.min_goal_distance
        low, high = env.joint_limits[:, 0], env.joint_limits[:, 1]
        assert np.all(episode.goal_qpos >= low)
        assert np.all(episode.goal_qpos <= high)


def test_goal_end_effector_matches_goal_qpos(env):
    episode = sample_episodes(env, ReachTask(), 1, seed=3)[0]
    env.reset(qpos=episode.goal_qpos)
    # The exploration state was moving, the reset one is at rest: the positions agree to
    # within the tracking error of one step.
    assert np.linalg.norm(env.ee_position() - episode.goal_ee) < 0.01


def test_oracle_reaches_and_stays(env):
    task = ReachTask()
    oracle = OracleController()
    for episode in sample_episodes(env, task, 3, seed=11):
        result = run_episode(env, episode, oracle, task)
        assert result['success']
        assert result['stayed']
        assert result['final_distance'] < 0.01
        assert result['best_distance'] <= result['final_distance'] + 1e-9
        assert len(result['distances']) == task.budget


def test_random_baseline_scores_below_oracle(env):
    task = ReachTask()
    episodes = sample_episodes(env, task, 6, seed=12)
    random_rows = [run_episode(env, e, RandomController(seed=1), task) for e in episodes]
    oracle_rows = [run_episode(env, e, OracleController(), task) for e in episodes]
    random_summary, oracle_summary = summarise(random_rows), summarise(oracle_rows)
    assert oracle_summary['success_rate'] == 1.0
    assert random_summary['success_rate'] < 1.0
    assert random_summary['final_distance_mean'] > oracle_summary['final_distance_mean']


def test_summary_and_table_values():
    rows = [
        {'success': True, 'stayed': True, 'final_distance': 0.01, 'best_distance': 0.005,
         'first_success_step': 10, 'stats': {'plans': 10, 'plan_times_s': [0.1, 0.3]}},
        {'success': True, 'stayed': False, 'final_distance': 0.09, 'best_distance': 0.02,
         'first_success_step': 20, 'stats': {'plans': 10, 'plan_times_s': [0.2]}},
        {'success': False, 'stayed': False, 'final_distance': 0.20, 'best_distance': 0.10,
         'first_success_step': None, 'stats': {'plans': 10, 'plan_times_s': []}},
    ]
    summary = summarise(rows)
    assert summary['success_rate'] == pytest.approx(2 / 3)
    assert summary['stay_rate'] == pytest.approx(1 / 3)
    assert summary['final_distance_mean'] == pytest.approx(0.1)
    assert summary['final_distance_median'] == pytest.approx(0.09)
    assert summary['first_success_step_median'] == pytest.approx(15)
    assert summary['plan_time_mean_s'] == pytest.approx(0.2)
    table = markdown_table({'lewm': summary}, radius=0.05)
    assert '| lewm | 2/3 (67%) | 1/3 (33%) | 10.0 / 9.0 | 4.2 | 15 | 10.0 | 200 /' in table


def test_planning_settings_merge():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert planning_settings(parser.parse_args([])) == DEFAULT_PLANNING
    paper = planning_settings(parser.parse_args(['--paper']))
    assert paper == PAPER_PLANNING
    assert paper['replan_every'] == paper['horizon'] * 5
    mixed = planning_settings(parser.parse_args(['--paper', '--iterations', '3',
                                                 '--warm-start', 'off']))
    assert mixed == {**PAPER_PLANNING, 'iterations': 3, 'warm_start': False}


def test_default_planning_is_the_planner_node_config():
    # `lewm eval` measures the success rate of the settings the simulation stack runs with.
    document = yaml.safe_load(share_path('config', 'sim.yaml').read_text())
    node = node_parameters(document, 'planner_node')
    names = {'method': 'optimizer', 'horizon': 'horizon', 'samples': 'samples',
             'elites': 'elites', 'iterations': 'iterations',
             'replan_every': 'replan_every_steps', 'history': 'history_latents',
             'step_weight': 'step_weight', 'action_weight': 'action_weight',
             'warm_start': 'warm_start', 'hold_margin': 'hold_margin'}

    assert set(names) == set(DEFAULT_PLANNING)
    for key, parameter in names.items():
        assert node[parameter] == DEFAULT_PLANNING[key], key


def test_eval_rejects_unknown_controller(tmp_path):
    assert cli.main(['eval', '--controllers', 'lewm,expert', '--episodes', '1']) == 2


@pytest.mark.skipif(not (SHIPPED_MODEL / 'config.json').is_file(),
                    reason='the shipped model models/reach_small is not present')
def test_shipped_model_beats_random(tmp_path, capsys):
    # A regression guard sized to the shipped model, not a check of the 90 % target: it reaches
    # 50 % of the goals over 50 episodes (see its model card) and 4 of these 6 on this seed.
    # Half is the floor, so that float differences between CPUs cannot flip one episode into
    # a failure.
    status = cli.main(['eval', '--episodes', '6', '--seed', '4242', '-o', str(tmp_path),
                       '--controllers', 'lewm,random', '--video', '1', '--threads', '1'])
    assert status == 0
    document = json.loads((tmp_path / 'eval.json').read_text())
    lewm = document['summaries']['lewm']
    random = document['summaries']['random']
    assert lewm['success_rate'] >= 0.5
    assert lewm['best_distance_mean'] < random['best_distance_mean']
    assert lewm['plans_per_episode'] == pytest.approx(10.0)
    assert document['planning'] == DEFAULT_PLANNING
    assert (tmp_path / 'eval.md').read_text().count('|') > 20
    assert (tmp_path / 'episodes.gif').stat().st_size > 10_000
    assert '| lewm |' in capsys.readouterr().out
