"""Sampling optimisers over normalised action sequences: CEM and MPPI.

An optimiser receives an objective that maps candidate sequences ``(N, H, K)`` to costs
``(N,)`` and element-wise bounds ``(H, K)``. It does not depend on models or latents (``N``
samples, ``H`` horizon blocks, ``K`` values per block).

Rules shared by both optimisers:

- every sampled candidate is clamped to the bounds before it is evaluated, and the current mean
  is candidate 0 of each iteration;
- a candidate whose cost is NaN or infinite has failed: its cost is set to ``+inf`` and it can
  never be an elite or receive MPPI weight;
- an iteration in which every candidate failed leaves the mean and the spread unchanged.
"""

import abc
from dataclasses import dataclass, field
import math
from typing import Callable

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class OptimizerResult:
    """Outcome of one optimisation.

    Attributes:
        solution: final mean ``(H, K)``, inside the bounds.
        best: lowest-cost candidate evaluated ``(H, K)``, or None if every candidate failed.
        best_cost: cost of ``best`` (``inf`` if every candidate failed).
        elite_cost: CEM: mean cost of the last iteration's elites; MPPI: the weight-averaged
            cost of the last iteration's candidates (``inf`` if none was valid).
        iterations: iterations run (fewer than configured after an early stop).
        evaluated: candidates evaluated in total.
        failed: candidates whose cost was NaN or infinite.
        best_history: lowest cost of each iteration.
        elite_history: ``elite_cost`` of each iteration.
        stopped_early: True when the early-stop rule ended the loop.
    """

    solution: torch.Tensor
    best: torch.Tensor | None
    best_cost: float
    elite_cost: float
    iterations: int
    evaluated: int
    failed: int
    best_history: list = field(default_factory=list)
    elite_history: list = field(default_factory=list)
    stopped_early: bool = False


class Optimizer(abc.ABC):
    """Base class: the sampling loop, bounds, failure handling and early stopping.

    Args:
        num_samples: candidates per iteration (candidate 0 is the current mean).
        iterations: maximum number of iterations.
        early_stop_patience: stop after this many consecutive iterations whose elite cost
            improved on the best elite cost so far by less than ``early_stop_rtol`` (relative).
            0 disables early stopping.
        early_stop_rtol: relative improvement that counts as progress.
    """

    def __init__(self, num_samples: int, iterations: int, early_stop_patience: int = 0,
                 early_stop_rtol: float = 1e-3) -> None:
        if int(num_samples) < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        if int(iterations) < 1:
            raise ValueError(f'iterations must be >= 1, got {iterations}')
        if int(early_stop_patience) < 0:
            raise ValueError(f'early_stop_patience must be >= 0 (0 disables it), got '
                             f'{early_stop_patience}')
        if not (early_stop_rtol >= 0 and math.isfinite(early_stop_rtol)):
            raise ValueError(f'early_stop_rtol must be finite and >= 0, got {early_stop_rtol}')
        self.num_samples = int(num_samples)
        self.iterations = int(iterations)
        self.early_stop_patience = int(early_stop_patience)
        self.early_stop_rtol = float(early_stop_rtol)

    @abc.abstractmethod
    def initial_std(self) -> float:
        """Return the sampling std of the first iteration, in normalised units."""

    @abc.abstractmethod
    def update(self, candidates: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor,
               std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Compute the next mean and std from one evaluated batch.

        Args:
            candidates: clamped candidates ``(N, H, K)``.
            costs: costs ``(N,)``, ``+inf`` for failed candidates, at least one finite.
            mean: current mean ``(H, K)``.
            std: current sampling std ``(H, K)``.

        Returns:
            ``(mean, std, elite_cost)``.
        """

    def optimize(self, objective: Objective, initial_mean: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor, generator: torch.Generator) -> OptimizerResult:
        """Minimise ``objective`` over sequences inside ``[lower, upper]``.

        Args:
            objective: maps candidates ``(N, H, K)`` to costs ``(N,)``.
            initial_mean: starting mean ``(H, K)`` (clamped to the bounds).
            lower: element-wise lower bounds ``(H, K)`` (``-inf`` for none).
            upper: element-wise upper bounds ``(H, K)``.
            generator: random source on the device of ``initial_mean``.
        """
        mean = torch.clamp(initial_mean, min=lower, max=upper)
        std = torch.full_like(mean, self.initial_std())
        best, best_cost = None, math.inf
        best_elite, stalled = math.inf, 0
        result = OptimizerResult(solution=mean, best=None, best_cost=math.inf,
                                 elite_cost=math.inf, iterations=0, evaluated=0, failed=0)
        for _ in range(self.iterations):
            noise = torch.randn((self.num_samples, *mean.shape), generator=generator,
                                device=mean.device, dtype=mean.dtype)
            candidates = mean + std * noise  # (N, H, K)
            candidates[0] = mean
            candidates = torch.clamp(candidates, min=lower, max=upper)

            costs = objective(candidates)
            if costs.shape != (self.num_samples,):
                raise ValueError(f'objective returned costs of shape {tuple(costs.shape)}, '
                                 f'expected ({self.num_samples},)')
            costs = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, math.inf))
            valid = int(torch.isfinite(costs).sum())
            result.iterations += 1
            result.evaluated += self.num_samples
            result.failed += self.num_samples - valid
            if valid == 0:
                result.best_history.append(math.inf)
                result.elite_history.append(math.inf)
                continue

            index = int(torch.argmin(costs))
            if float(costs[index]) < best_cost:
                best, best_cost = candidates[index].clone(), float(costs[index])
            result.best_history.append(float(costs[index]))
            mean, std, elite_cost = self.update(candidates, costs, mean, std)
            mean = torch.clamp(mean, min=lower, max=upper)
            result.elite_history.append(elite_cost)
            result.elite_cost = elite_cost

            if self.early_stop_patience:
                if math.isfinite(best_elite):
                    scale = max(abs(best_elite), 1e-12)
                    improved = best_elite - elite_cost > self.early_stop_rtol * scale
                else:
                    improved = True
                stalled = 0 if improved else stalled + 1
                best_elite = min(best_elite, elite_cost)
                if stalled >= self.early_stop_patience:
                    result.stopped_early = True
                    break

        result.solution = mean
        result.best = best
        result.best_cost = best_cost
        return result


class CEMOptimizer(Optimizer):
    """Cross-entropy method with Gaussian sampling, as used for LeWM planning.

    Each iteration samples around the mean, keeps the ``num_elites`` lowest-cost valid
    candidates and sets the mean and std to their mean and (unbiased) std. The plan is the final
    mean, not the best sample. Defaults: 300 samples, 30 elites, 30 iterations, initial std 1.

    When fewer valid candidates than ``num_elites`` remain, the valid ones are the elites. With
    a single valid candidate the std is kept, because the std of one sample is undefined.
    """

    def __init__(self, num_samples: int = 300, num_elites: int = 30, iterations: int = 30,
                 initial_std: float = 1.0, **kwargs) -> None:
        super().__init__(num_samples, iterations, **kwargs)
        if not 1 <= int(num_elites) <= self.num_samples:
            raise ValueError(f'num_elites must be between 1 and num_samples '
                             f'({self.num_samples}), got {num_elites}')
        if not (initial_std > 0 and math.isfinite(initial_std)):
            raise ValueError(f'initial_std must be positive and finite, got {initial_std}')
        self.num_elites = int(num_elites)
        self._initial_std = float(initial_std)

    def initial_std(self) -> float:
        return self._initial_std

    def update(self, candidates, costs, mean, std):
        valid = int(torch.isfinite(costs).sum())
        count = min(self.num_elites, valid)
        # Failed candidates cost +inf, so with count <= valid they are never among the top.
        elite_costs, index = torch.topk(costs, count, largest=False)
        elites = candidates[index]  # (count, H, K)
        new_mean = elites.mean(dim=0)
        new_std = elites.std(dim=0) if count > 1 else std
        return new_mean, new_std, float(elite_costs.mean())


class MPPIOptimizer(Optimizer):
    """Model predictive path integral optimiser with a fixed sampling std.

    Each iteration samples ``mean + noise_std * eps``, weights candidate ``i`` by
    ``exp(-(cost_i - min cost) / temperature)`` (normalised to sum to 1, 0 for failed
    candidates) and sets the mean to the weighted average. ``temperature`` is in cost units:
    small values approach picking the best sample, large values average all samples.
    """

    def __init__(self, num_samples: int = 300, iterations: int = 30, temperature: float = 1.0,
                 noise_std: float = 1.0, **kwargs) -> None:
        super().__init__(num_samples, iterations, **kwargs)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f'temperature must be positive and finite, got {temperature}')
        if not (noise_std > 0 and math.isfinite(noise_std)):
            raise ValueError(f'noise_std must be positive and finite, got {noise_std}')
        self.temperature = float(temperature)
        self.noise_std = float(noise_std)

    def initial_std(self) -> float:
        return self.noise_std

    def update(self, candidates, costs, mean, std):
        # exp(-inf) = 0, so failed candidates get no weight; the minimum is finite.
        weights = torch.softmax(-(costs - costs.min()) / self.temperature, dim=0)  # (N,)
        new_mean = torch.einsum('n,nhk->hk', weights, candidates)
        finite = torch.isfinite(costs)
        elite_cost = float((weights[finite] * costs[finite]).sum())
        return new_mean, std, elite_cost
