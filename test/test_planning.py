"""Planner tests on a linear latent model whose optimal action sequence is known in closed form."""

import math

import pytest
import torch

from lewm_ros.planning import (ActionBounds, CEMOptimizer, GoalCost, LinearLatentModel,
                               LinearModelConfig, MPPIOptimizer, Planner, PlannerConfig)

DTYPE = torch.float64
ACTION_MEAN = (0.01, -0.02)
ACTION_STD = (0.05, 0.1)
FAST_MPPI = dict(method='mppi', temperature=0.05, noise_std=0.2, iterations=40)


def make_model(horizon=3, frameskip=2, action_dim=2, integrator=False, seed=0):
    """Linear model whose final-latent map over ``horizon`` blocks is a rotation.

    With ``integrator`` the latent has the block size and ``z' = z + C u``. Otherwise the latent
    contains ``horizon`` blocks that a shift register moves along, seen through a random
    rotation. Either way the map from the flattened plan to ``z_H`` is orthogonal, so the
    box-constrained optimum is the unconstrained one clipped to the box.
    """
    generator = torch.Generator().manual_seed(seed)
    block = frameskip * action_dim
    dim = block if integrator else horizon * block
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=DTYPE))
    if integrator:
        transition = torch.eye(dim, dtype=DTYPE)
        control = rotation[:, :block]
    else:
        shift = torch.roll(torch.eye(dim, dtype=DTYPE), block, dims=0)
        transition = rotation @ shift @ rotation.T
        control = rotation @ torch.eye(dim, dtype=DTYPE)[:, :block]
    config = LinearModelConfig(latent_dim=dim, action_dim=action_dim, frameskip=frameskip,
                               action_mean=list(ACTION_MEAN[:action_dim]),
                               action_std=list(ACTION_STD[:action_dim]))
    return LinearLatentModel(transition, control, config)


def goal_for(model, start, blocks):
    """Goal latent reached from ``start`` ``(D,)`` by normalised ``blocks`` ``(H, F*A)``."""
    offset, response = model.final_latent_map(blocks.shape[0])
    return offset @ start + response @ blocks.flatten()


def raw_actions(model, blocks):
    """Normalised blocks ``(H, F*A)`` -> raw actions ``(H*F, A)``."""
    mean = torch.tensor(model.config.action_mean, dtype=DTYPE)
    std = torch.tensor(model.config.action_std, dtype=DTYPE)
    return blocks.reshape(-1, model.config.action_dim) * std + mean


def random_blocks(horizon, block, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    return scale * (2 * torch.rand(horizon, block, generator=generator, dtype=DTYPE) - 1)


@pytest.mark.parametrize('settings', [dict(method='cem'), FAST_MPPI], ids=['cem', 'mppi'])
def test_planner_finds_reachable_goal(settings):
    model = make_model()
    start = torch.randn(model.config.latent_dim, dtype=DTYPE,
                        generator=torch.Generator().manual_seed(1))
    target = random_blocks(3, 4, 1.0, seed=2)
    planner = Planner(model, PlannerConfig(horizon=3, **settings))

    result = planner.plan(start[None], goal_for(model, start, target))

    assert result.success
    assert result.actions.shape == (6, 2)
    assert result.blocks.shape == (3, 4)
    assert result.predicted_latents.shape == (3, model.config.latent_dim)
    tolerance = 1e-4 if settings['method'] == 'cem' else 0.08
    torch.testing.assert_close(result.blocks, target, atol=tolerance, rtol=0)
    torch.testing.assert_close(result.actions, raw_actions(model, target),
                               atol=tolerance * max(ACTION_STD), rtol=0)
    assert result.stats['final_distance'] < 10 * tolerance


def test_planner_matches_least_squares_with_extra_terms():
    """Per-step goal terms and a raw-action penalty: the optimum is a ridge regression."""
    horizon, frameskip, action_dim = 2, 2, 2
    generator = torch.Generator().manual_seed(3)
    # A latent as large as the plan and a strong action penalty keep the cost well conditioned.
    # On a badly conditioned cost CEM's std collapses before the mean reaches the optimum.
    dim, block = 8, frameskip * action_dim
    transition = 0.8 * torch.linalg.qr(torch.randn(dim, dim, generator=generator,
                                                   dtype=DTYPE))[0]
    control = torch.randn(dim, block, generator=generator, dtype=DTYPE) / 2
    config = LinearModelConfig(latent_dim=dim, action_dim=action_dim, frameskip=frameskip,
                               action_mean=list(ACTION_MEAN), action_std=list(ACTION_STD))
    model = LinearLatentModel(transition, control, config)
    start = torch.randn(dim, generator=generator, dtype=DTYPE)
    goal = torch.randn(dim, generator=generator, dtype=DTYPE)
    cost = GoalCost(final_weight=1.0, step_weight=0.5, action_weight=200.0)

    # Stack every squared term as a row block of one least-squares problem in the plan u.
    rows, targets = [], []
    for steps, weight in ((horizon, cost.final_weight + cost.step_weight),
                          (1, cost.step_weight)):
        offset, response = model.final_latent_map(steps)
        response = torch.cat([response, torch.zeros(dim, (horizon - steps) * block,
                                                    dtype=DTYPE)], dim=1)
        rows.append(math.sqrt(weight) * response)
        targets.append(math.sqrt(weight) * (goal - offset @ start))
    std = torch.tensor(ACTION_STD, dtype=DTYPE).repeat(horizon * frameskip)
    mean = torch.tensor(ACTION_MEAN, dtype=DTYPE).repeat(horizon * frameskip)
    rows.append(math.sqrt(cost.action_weight) * torch.diag(std))
    targets.append(-math.sqrt(cost.action_weight) * mean)
    expected = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets)[:, None]).solution
    expected = expected.reshape(horizon, block)

    planner = Planner(model, PlannerConfig(horizon=horizon, iterations=40), cost=cost)
    result = planner.plan(start[None], goal)

    assert result.success
    torch.testing.assert_close(result.blocks, expected, atol=1e-3, rtol=0)
    expected_cost = float(cost(result.predicted_latents[None], goal,
                               raw_actions(model, result.blocks)[None])[0])
    assert result.stats['plan_cost'] == pytest.approx(expected_cost, rel=1e-9)


@pytest.mark.parametrize('settings', [dict(method='cem'), FAST_MPPI], ids=['cem', 'mppi'])
def test_planner_sits_on_bound_when_optimum_outside(settings):
    model = make_model()
    max_delta = 0.08
    bounds = ActionBounds.symmetric(max_delta, action_dim=2)
    # In normalised units the bounds are [(-0.08 - mean) / std, (0.08 - mean) / std], about
    # [-1.8, 1.4] for joint 0 and [-0.6, 1.0] for joint 1. A target of +-3 is outside both.
    target = random_blocks(3, 4, 1.0, seed=4)
    target[0, 0] = 3.0
    target[1, 3] = -3.0
    target[2, 1] = 3.0
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    planner = Planner(model, PlannerConfig(horizon=3, **settings), bounds=bounds)

    result = planner.plan(start[None], goal_for(model, start, target))

    assert result.success
    assert float(result.actions.max()) <= max_delta
    assert float(result.actions.min()) >= -max_delta
    clipped = torch.clamp(raw_actions(model, target), -max_delta, max_delta)
    tolerance = 1e-4 if settings['method'] == 'cem' else 0.01
    torch.testing.assert_close(result.actions, clipped, atol=tolerance, rtol=0)
    # Targets outside the box land on it: step 0 joint 0, step 3 joint 1, step 4 joint 1.
    assert float(result.actions[0, 0]) == pytest.approx(max_delta, abs=tolerance)
    assert float(result.actions[3, 1]) == pytest.approx(-max_delta, abs=tolerance)
    assert float(result.actions[4, 1]) == pytest.approx(max_delta, abs=tolerance)


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_every_plan_stays_inside_bounds(method):
    model = make_model(seed=5)
    bounds = ActionBounds(low=(-0.03, -0.2), high=(0.07, 0.01))
    planner = Planner(model, PlannerConfig(method=method, horizon=3, num_samples=50,
                                           num_elites=5, iterations=5), bounds=bounds)
    generator = torch.Generator().manual_seed(6)
    for _ in range(10):
        start = torch.randn(model.config.latent_dim, generator=generator, dtype=DTYPE)
        goal = 10 * torch.randn(model.config.latent_dim, generator=generator, dtype=DTYPE)
        result = planner.plan(start[None], goal)
        assert result.success
        for joint in range(2):
            assert float(result.actions[:, joint].min()) >= bounds.low[joint]
            assert float(result.actions[:, joint].max()) <= bounds.high[joint]


def iterations_to_reach(history, threshold):
    for index, value in enumerate(history):
        if value <= threshold:
            return index + 1
    return len(history) + 1


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_warm_start_reduces_iterations(method):
    """Replan after each executed block; the shifted plan of an integrator is still optimal."""
    model = make_model(integrator=True, seed=7)
    frameskip = model.config.frameskip
    goal = goal_for(model, torch.zeros(4, dtype=DTYPE), random_blocks(3, 4, 1.0, seed=8))
    threshold = 1e-3
    needed = {}
    for warm in (False, True):
        settings = dict(FAST_MPPI) if method == 'mppi' else {}
        settings.update(method=method, horizon=3, warm_start=warm, iterations=20)
        planner = Planner(model, PlannerConfig(**settings))
        state = torch.zeros(4, dtype=DTYPE)
        needed[warm] = []
        for _ in range(4):
            result = planner.plan(state[None], goal)
            assert result.success
            first_plan = not needed[warm]
            assert result.stats['warm_started'] == (warm and not first_plan)
            needed[warm].append(iterations_to_reach(result.stats['best_history'], threshold))
            state = model.step(state, result.blocks[0])
            planner.record_executed(frameskip)

    # The first plan of both runs starts cold; every replan after it is faster when warm.
    assert needed[True][0] == needed[False][0]
    for cold, warm in zip(needed[False][1:], needed[True][1:]):
        assert warm < cold
    if method == 'cem':
        # CEM's first plan is exact, so its shifted tail already meets the threshold.
        assert needed[True][1:] == [1, 1, 1]


def test_warm_start_shifts_by_executed_steps():
    """With one sample and one iteration the plan is the initial mean: the shifted old plan."""
    model = make_model()
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    target = random_blocks(3, 4, 1.0, seed=9)
    planner = Planner(model, PlannerConfig(horizon=3))
    first = planner.plan(start[None], goal_for(model, start, target)).blocks

    planner.config = PlannerConfig(horizon=3, num_samples=1, num_elites=1, iterations=1)
    planner.optimizer = CEMOptimizer(num_samples=1, num_elites=1, iterations=1)
    planner.record_executed(2)
    planner.record_executed(1)
    second = planner.plan(start[None], goal_for(model, start, target))

    steps = first.reshape(6, 2)
    expected = torch.cat([steps[3:], torch.zeros(3, 2, dtype=DTYPE)]).reshape(3, 4)
    assert second.stats['warm_started']
    torch.testing.assert_close(second.blocks, expected, atol=0, rtol=0)

    planner.record_executed(6)
    third = planner.plan(start[None], goal_for(model, start, target))
    assert not third.stats['warm_started']
    torch.testing.assert_close(third.blocks, torch.zeros(3, 4, dtype=DTYPE), atol=0, rtol=0)


class HoleCost(GoalCost):
    """Goal cost that is NaN wherever the first coordinate of the final latent exceeds 0.5."""

    def __call__(self, latents, goal, actions=None):
        cost = super().__call__(latents, goal, actions)
        return torch.where(latents[:, -1, 0] > 0.5, torch.full_like(cost, math.nan), cost)


class HoleModel(LinearLatentModel):
    """Linear model whose prediction is NaN when the first block's first value exceeds 0.5."""

    def rollout(self, history_latents, candidates, history_actions=None):
        latents = super().rollout(history_latents, candidates, history_actions)
        broken = candidates[:, 0, 0] > 0.5
        latents[broken] = math.nan
        return latents


@pytest.mark.parametrize('settings', [dict(method='cem'), FAST_MPPI], ids=['cem', 'mppi'])
def test_nan_cost_candidates_never_win(settings):
    model = make_model(integrator=True, seed=10)
    start = torch.zeros(4, dtype=DTYPE)
    # The unconstrained optimum puts z_H[0] at 1.0, inside the NaN region (> 0.5). The best
    # finite plans sit on its border z_H[0] = 0.5 with the other coordinates on target.
    goal = torch.tensor([1.0, -0.3, 0.2, 0.4], dtype=DTYPE)
    planner = Planner(model, PlannerConfig(horizon=3, **settings), cost=HoleCost())

    result = planner.plan(start[None], goal)

    assert result.success
    assert result.stats['candidates_failed'] > 0
    assert math.isfinite(result.stats['plan_cost'])
    final = result.predicted_latents[-1]
    assert float(final[0]) <= 0.5
    assert float(final[0]) == pytest.approx(0.5, abs=0.05)
    torch.testing.assert_close(final[1:], goal[1:], atol=0.05, rtol=0)


@pytest.mark.parametrize('settings', [dict(method='cem'), FAST_MPPI], ids=['cem', 'mppi'])
def test_nan_latent_candidates_never_win(settings):
    reference = make_model(seed=11)
    model = HoleModel(reference.transition, reference.control, reference.config)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    target = random_blocks(3, 4, 1.0, seed=12)
    target[0, 0] = 1.5
    planner = Planner(model, PlannerConfig(horizon=3, **settings))

    result = planner.plan(start[None], goal_for(model, start, target))

    assert result.success
    assert result.stats['candidates_failed'] > 0
    assert bool(torch.isfinite(result.predicted_latents).all())
    assert float(result.blocks[0, 0]) <= 0.5
    assert float(result.blocks[0, 0]) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_all_failed_candidates_report_failure(method):
    reference = make_model(seed=13)
    model = HoleModel(reference.transition, reference.control, reference.config)
    bounds = ActionBounds(low=(0.5, -1.0), high=(1.0, 1.0))  # every first value > 0.5
    planner = Planner(model, PlannerConfig(method=method, horizon=3, num_samples=20,
                                           num_elites=4, iterations=3), bounds=bounds)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)

    result = planner.plan(start[None], torch.ones(model.config.latent_dim, dtype=DTYPE))

    assert not result.success
    assert result.actions is None
    assert result.blocks is None
    assert result.predicted_latents is None
    assert 'all 60 candidates failed' in result.reason
    assert result.stats['candidates_failed'] == 60
    assert result.stats['candidates_evaluated'] == 60
    assert result.stats['rollout_calls'] == 3


class SlabModel(LinearLatentModel):
    """Linear model whose prediction is NaN when the first block's first value is near 0."""

    def rollout(self, history_latents, candidates, history_actions=None):
        latents = super().rollout(history_latents, candidates, history_actions)
        latents[candidates[:, 0, 0].abs() < 0.3] = math.nan
        return latents


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_failed_plan_rollout_reports_failure(method):
    """Valid candidates on both sides of a NaN slab average to a plan inside it."""
    reference = make_model(seed=21)
    model = SlabModel(reference.transition, reference.control, reference.config)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    target = random_blocks(3, 4, 1.0, seed=22)
    target[0, 0] = 0.0
    noise = 1.0 if method == 'cem' else 0.2
    planner = Planner(model, PlannerConfig(method=method, horizon=3, iterations=1,
                                           temperature=0.05, noise_std=noise))

    result = planner.plan(start[None], goal_for(model, start, target))

    assert not result.success
    assert result.actions is None
    assert result.reason == 'the rollout of the returned plan is not finite'
    assert result.stats['candidates_failed'] < 300
    assert result.stats['rollout_calls'] == 2
    retry = planner.plan(start[None], goal_for(model, start, target))
    assert not retry.stats['warm_started']


@pytest.mark.parametrize('method', ['cem', 'mppi'])
def test_plan_is_deterministic_for_seed(method):
    model = make_model(seed=14)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    goal = goal_for(model, start, random_blocks(3, 4, 1.0, seed=15))
    config = PlannerConfig(method=method, horizon=3, num_samples=30, num_elites=5,
                           iterations=4, seed=123)

    def plan_twice(config):
        planner = Planner(model, config)
        return [planner.plan(start[None], goal).blocks for _ in range(2)]

    first, second = plan_twice(config), plan_twice(config)
    other = plan_twice(PlannerConfig(**{**config.__dict__, 'seed': 124}))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_early_stop_ends_stalled_optimisation():
    """An unreachable goal: the cost levels off above zero, so its relative progress stalls."""
    model = make_model(seed=16)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    goal = goal_for(model, start, random_blocks(3, 4, 5.0, seed=17))
    bounds = ActionBounds.symmetric(0.05, action_dim=2)

    faithful = Planner(model, PlannerConfig(horizon=3), bounds=bounds).plan(start[None], goal)
    stopping = Planner(model, PlannerConfig(horizon=3, early_stop_patience=3,
                                            early_stop_rtol=1e-3),
                       bounds=bounds).plan(start[None], goal)

    assert faithful.stats['iterations'] == 30
    assert not faithful.stats['stopped_early']
    assert stopping.stats['stopped_early']
    assert stopping.stats['iterations'] < 30
    elite = stopping.stats['elite_history']
    assert len(elite) == stopping.stats['iterations']
    # Each of the last three iterations improved on the best elite cost before it by at most
    # 0.1 %, and the one before them by more.
    for index in range(len(elite) - 3, len(elite)):
        best_before = min(elite[:index])
        assert best_before - elite[index] <= 1e-3 * best_before
    assert min(elite[:-4]) - elite[-4] > 1e-3 * min(elite[:-4])
    assert stopping.stats['elite_cost'] == pytest.approx(faithful.stats['elite_cost'], rel=1e-2)


@pytest.mark.parametrize('evaluate_plan', [False, True])
def test_predictor_calls_counted(evaluate_plan):
    model = make_model(seed=18)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    planner = Planner(model, PlannerConfig(horizon=3, num_samples=20, num_elites=4,
                                           iterations=7, evaluate_plan=evaluate_plan))

    result = planner.plan(start[None], torch.ones(model.config.latent_dim, dtype=DTYPE))

    plans_evaluated = 1 if evaluate_plan else 0
    assert model.rollout_calls == 7 + plans_evaluated
    assert model.predictor_calls == 3 * (7 + plans_evaluated)
    assert result.stats['predictor_calls'] == model.predictor_calls
    assert result.stats['candidates_evaluated'] == 140
    assert (result.predicted_latents is not None) == evaluate_plan


def hold_blocks(model, horizon):
    """Return the normalised blocks ``(H, F*A)`` of the plan that keeps every raw action at 0."""
    mean = torch.tensor(model.config.action_mean, dtype=DTYPE)
    std = torch.tensor(model.config.action_std, dtype=DTYPE)
    steps = horizon * model.config.frameskip
    return (-mean / std).repeat(steps).reshape(horizon, -1)


def test_planner_holds_still_at_the_goal():
    model = make_model(seed=21)
    start = torch.randn(model.config.latent_dim, dtype=DTYPE,
                        generator=torch.Generator().manual_seed(3))
    goal = goal_for(model, start, hold_blocks(model, 3))  # where holding still ends
    settings = dict(horizon=3, num_samples=64, num_elites=8, iterations=4)

    wandering = Planner(model, PlannerConfig(**settings)).plan(start[None], goal)
    holding = Planner(model, PlannerConfig(hold_margin=0.1, **settings)).plan(start[None], goal)

    # A few optimiser iterations leave sampling noise in the plan; holding still is exact.
    assert not wandering.stats['held']
    assert wandering.actions.abs().max() > 1e-3
    assert holding.stats['held']
    assert torch.equal(holding.actions, torch.zeros(6, 2, dtype=DTYPE))
    torch.testing.assert_close(holding.blocks, hold_blocks(model, 3))
    assert holding.stats['plan_cost'] == pytest.approx(0.0, abs=1e-20)
    assert holding.stats['hold_cost'] == holding.stats['plan_cost']
    assert holding.stats['final_distance'] == pytest.approx(0.0, abs=1e-9)


def test_planner_moves_when_plan_beats_hold():
    model = make_model(seed=22)
    start = torch.zeros(model.config.latent_dim, dtype=DTYPE)
    target = random_blocks(3, 4, 1.0, seed=4)
    planner = Planner(model, PlannerConfig(horizon=3, hold_margin=0.5))

    result = planner.plan(start[None], goal_for(model, start, target))

    assert not result.stats['held']
    torch.testing.assert_close(result.blocks, target, atol=1e-4, rtol=0)
    assert result.stats['plan_cost'] < 0.5 * result.stats['hold_cost']
    # Holding still and the plan are rolled out together: one extra call, also without
    # evaluate_plan.
    model.rollout_calls = 0
    quiet = Planner(model, PlannerConfig(horizon=3, iterations=5, hold_margin=0.5,
                                         evaluate_plan=False))
    result = quiet.plan(start[None], goal_for(model, start, target))
    assert model.rollout_calls == 6
    assert result.predicted_latents is None
    assert math.isfinite(result.stats['hold_cost'])


def test_history_actions_reach_model_as_normalised_blocks():
    seen = {}

    class Recorder(LinearLatentModel):
        def rollout(self, history_latents, candidates, history_actions=None):
            seen['history_actions'] = history_actions
            return super().rollout(history_latents, candidates, history_actions)

    reference = make_model(seed=19)
    model = Recorder(reference.transition, reference.control, reference.config)
    planner = Planner(model, PlannerConfig(horizon=3, num_samples=4, num_elites=2,
                                           iterations=1))
    latents = torch.zeros(3, model.config.latent_dim, dtype=DTYPE)
    raw = torch.tensor([[0.06, 0.08], [0.01, -0.02], [-0.04, 0.18], [0.11, -0.12]],
                       dtype=DTYPE)

    planner.plan(latents, torch.ones(model.config.latent_dim, dtype=DTYPE), raw)

    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [-1.0, 2.0, 2.0, -1.0]], dtype=DTYPE)
    torch.testing.assert_close(seen['history_actions'], expected)


def test_planner_rejects_bad_input():
    model = make_model(seed=20)
    dim = model.config.latent_dim
    planner = Planner(model, PlannerConfig(horizon=3))
    latents = torch.zeros(2, dim, dtype=DTYPE)
    goal = torch.zeros(dim, dtype=DTYPE)

    with pytest.raises(ValueError, match=r'goal_latent must be a tensor \(12,\)'):
        planner.plan(latents, torch.zeros(dim + 1, dtype=DTYPE))
    with pytest.raises(ValueError, match=r'history_latents must be a tensor \(T, D\)'):
        planner.plan(goal, goal)
    with pytest.raises(ValueError, match='history_latents contain NaN'):
        planner.plan(torch.full((2, dim), math.nan, dtype=DTYPE), goal)
    with pytest.raises(ValueError, match=r'history_actions must be the raw actions \(2, 2\)'):
        planner.plan(latents, goal, torch.zeros(1, 4, dtype=DTYPE))
    with pytest.raises(ValueError, match='ActionBounds has 3 joints'):
        Planner(model, bounds=ActionBounds.symmetric(0.1, action_dim=3))
    with pytest.raises(ValueError, match='executed steps must be a non-negative integer'):
        planner.record_executed(-1)
    with pytest.raises(TypeError, match='needs a `config` and a `rollout'):
        Planner(object())


@pytest.mark.parametrize('values, message', [
    (dict(method='adam'), 'method must be one of'),
    (dict(horizon=0), 'horizon must be >= 1'),
    (dict(num_elites=400), 'num_elites must be between 1 and num_samples'),
    (dict(method='mppi', temperature=0.0), 'temperature must be positive'),
    (dict(early_stop_patience=-1), 'early_stop_patience must be >= 0'),
    (dict(hold_margin=1.0), r'hold_margin must be in \[0, 1\)'),
    (dict(hold_margin=-0.1), r'hold_margin must be in \[0, 1\)'),
])
def test_planner_config_rejects_invalid_values(values, message):
    with pytest.raises(ValueError, match=message):
        PlannerConfig(**values)


def test_action_bounds_reject_invalid_values():
    with pytest.raises(ValueError, match='joint 1 has low 0.2 > high 0.1'):
        ActionBounds(low=(0.0, 0.2), high=(0.1, 0.1))
    with pytest.raises(ValueError, match='low has 1 values and high has 2'):
        ActionBounds(low=(0.0,), high=(0.1, 0.1))
    with pytest.raises(ValueError, match='max_delta must be >= 0'):
        ActionBounds.symmetric([0.1, -0.1])


def test_mppi_gives_failed_candidates_no_weight():
    optimizer = MPPIOptimizer(num_samples=3, iterations=1, temperature=1e6)
    candidates = torch.tensor([[[0.0]], [[1.0]], [[5.0]]])
    costs = torch.tensor([1.0, 1.0, math.inf])
    mean, _, elite_cost = optimizer.update(candidates, costs, candidates[0], torch.ones(1, 1))
    assert float(mean) == pytest.approx(0.5)
    assert elite_cost == pytest.approx(1.0)
