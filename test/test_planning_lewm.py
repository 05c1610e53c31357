"""Planner on the real LeWM model: predictor and encoder calls per plan, bounds, determinism."""

import pytest
import torch

from lewm_ros.model import LeWM, ModelConfig
from lewm_ros.planning import ActionBounds, Planner, PlannerConfig


class CountingLeWM(LeWM):
    """LeWM that counts forward passes of its predictor and encoder modules."""

    def __init__(self, config):
        super().__init__(config)
        self.predict_calls = 0
        self.encode_calls = 0
        self.predictor.register_forward_pre_hook(self._count_predict)
        self.encoder.register_forward_pre_hook(self._count_encode)

    def _count_predict(self, module, inputs):
        self.predict_calls += 1

    def _count_encode(self, module, inputs):
        self.encode_calls += 1


def build(preset, seed=0):
    torch.manual_seed(seed)
    overrides = {}
    if preset == 'small':
        overrides = dict(action_mean=[0.0, 0.01, -0.01], action_std=[0.02, 0.03, 0.04])
    return CountingLeWM(ModelConfig.preset(preset, **overrides)).eval()


def observation(model, seed=1):
    """History latents ``(history, D)``, raw history actions and a goal latent."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(config.history, config.latent_dim, generator=generator)
    actions = 0.01 * torch.randn((config.history - 1) * config.frameskip, config.action_dim,
                                 generator=generator)
    goal = torch.randn(config.latent_dim, generator=generator)
    return latents, actions, goal


def test_paper_planner_settings_on_small_model():
    """300 samples x 30 iterations over 5 blocks: 150 predictor calls, no encoder call."""
    model = build('small')
    latents, actions, goal = observation(model)
    bounds = ActionBounds.symmetric(0.05, action_dim=3)
    planner = Planner(model, PlannerConfig(evaluate_plan=False), bounds=bounds)

    result = planner.plan(latents, goal, actions)

    assert result.success
    assert model.predict_calls == 5 * 30
    assert model.encode_calls == 0
    assert result.stats['predictor_calls'] == 150
    assert result.stats['candidates_evaluated'] == 300 * 30
    assert result.actions.shape == (25, 3)
    assert float(result.actions.abs().max()) <= 0.05
    assert result.predicted_latents is None


@pytest.mark.parametrize('preset', ['small', 'paper'])
def test_plan_evaluation_adds_one_rollout(preset):
    model = build(preset)
    latents, actions, goal = observation(model)
    planner = Planner(model, PlannerConfig(num_samples=8, num_elites=2, iterations=2))

    result = planner.plan(latents, goal, actions)

    assert result.success
    assert model.predict_calls == 5 * (2 + 1)
    assert model.encode_calls == 0
    assert result.predicted_latents.shape == (5, model.config.latent_dim)
    expected = torch.linalg.vector_norm(result.predicted_latents[-1] - goal)
    assert result.stats['final_distance'] == pytest.approx(float(expected), rel=1e-5)
    frameskip, action_dim = model.config.frameskip, model.config.action_dim
    assert result.actions.shape == (5 * frameskip, action_dim)


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_lewm_plan_is_deterministic_for_seed(method):
    model = build('small')
    latents, actions, goal = observation(model)
    config = PlannerConfig(method=method, num_samples=16, num_elites=4, iterations=3, seed=7)

    first = Planner(model, config).plan(latents, goal, actions)
    second = Planner(model, config).plan(latents, goal, actions)

    assert torch.equal(first.actions, second.actions)
    assert first.stats['best_cost'] == second.stats['best_cost']


def test_lewm_in_training_mode_is_rejected():
    model = build('small').train()
    latents, actions, goal = observation(model)
    planner = Planner(model, PlannerConfig(num_samples=4, num_elites=2, iterations=1))
    with pytest.raises(ValueError, match=r'training mode.*call model.eval\(\)'):
        planner.plan(latents, goal, actions)


def test_planner_benchmark_prints_one_row(capsys):
    from lewm_ros import cli

    threads = torch.get_num_threads()
    try:
        status = cli.main(['bench', 'planner', '--presets', 'small', '--settings',
                           'cem-32x3-warm', '--repeats', '2', '--threads', '1'])
    finally:
        torch.set_num_threads(threads)  # the benchmark sets it for the whole process

    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # machine line, header, one row
    row = lines[-1].split()
    assert row[:3] == ['small', 'cem-32x3-warm', '2']
    assert float(row[3]) > 0
    assert float(row[6]) > 0  # GFLOP per plan
    assert row[8:10] == ['96', '20']  # 32 samples x 3 iterations, 5 x (3 + 1) predictor calls


def test_planner_benchmark_rejects_zero_repeats():
    from lewm_ros import cli

    status = cli.main(['bench', 'planner', '--presets', 'small', '--repeats', '0'])

    assert status == 2
