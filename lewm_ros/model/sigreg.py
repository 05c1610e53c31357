"""SIGReg: Sketched Isotropic Gaussian Regulariser (LeJEPA / LeWM), single-process and DDP.

Exactly the statistic of the released LeWM code (research notes section 2): the embeddings
``(T, B, D)`` are projected on ``M`` random unit directions; for each projection and time step
the Epps-Pulley statistic compares the empirical characteristic function over the batch with
that of N(0, 1) on 17 knots in [0, 3] (trapezoid weights doubled for the even integrand,
window ``exp(-t^2/2)``), scaled by the batch size, then averaged over directions and time steps.

Under ``torch.distributed`` the characteristic-function means are taken over the *global* batch:
the per-rank sums of cos and sin are all-reduced with an autograd-aware reduction and divided by
the global batch size, and every rank uses the directions of rank 0. Every rank then gets the
same value as one process on the concatenated batch. Because the autograd all-reduce sums the
upstream gradients of all ranks in backward, the gradient on each rank's inputs is
``world_size`` times the single-process gradient; DDP divides parameter gradients by
``world_size``, so after DDP's averaging the update equals the single-process one (a
non-autograd all-reduce would make it ``1/world_size`` too small).
"""

import torch
import torch.distributed as dist

from .config import ModelConfig


def random_directions(dim: int, num: int, *, device=None, dtype=torch.float32,
                      generator: torch.Generator | None = None,
                      seed: int | None = None) -> torch.Tensor:
    """``(dim, num)`` matrix of directions uniform on the unit sphere (columns of norm 1).

    Drawn from ``generator`` if given, else from a new generator seeded with ``seed`` on
    ``device``, else from torch's global RNG on ``device``.
    """
    if generator is None and seed is not None:
        generator = torch.Generator(device=device or 'cpu').manual_seed(int(seed))
    draw_device = generator.device if generator is not None else device
    directions = torch.randn(dim, num, device=draw_device, dtype=torch.float32,
                             generator=generator)
    directions = directions / directions.norm(p=2, dim=0, keepdim=True)
    return directions.to(device=device, dtype=dtype)


def quadrature(knots: int = 17, t_max: float = 3.0, *, device=None,
               dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knots ``t``, target CF ``exp(-t^2/2)`` and weights (doubled trapezoid times window)."""
    t = torch.linspace(0.0, t_max, knots, device=device, dtype=dtype)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, device=device, dtype=dtype)
    weights[0] = weights[-1] = dt
    window = torch.exp(-t.square() / 2)
    return t, window, weights * window


def _distributed(group) -> bool:
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size(group) > 1)


def sigreg(embeddings: torch.Tensor, num_directions: int = 1024, knots: int = 17,
           t_max: float = 3.0, *, generator: torch.Generator | None = None,
           seed: int | None = None, directions: torch.Tensor | None = None,
           distributed: bool | None = None, group=None) -> torch.Tensor:
    """Compute SIGReg of time-major embeddings ``(T, B, D)`` (or ``(B, D)``, taken as T = 1).

    Args:
        embeddings: the encoder embeddings of every clip frame, time-major.
        num_directions: M, the number of random projections.
        knots, t_max: quadrature of the Epps-Pulley integral on [0, t_max].
        generator, seed: where the directions come from (reproducible values); by default the
            global RNG. They are drawn on the input's device.
        directions: ``(D, M)`` unit directions to use instead of drawing them.
        distributed: compute over the global batch of all ranks; ``None`` means "when
            torch.distributed is initialised with more than one rank".
        group: the process group (default: the world).

    Returns:
        A scalar tensor: near 0 for N(0, I) embeddings, large for collapsed ones.
    """
    if embeddings.dim() == 2:
        embeddings = embeddings.unsqueeze(0)
    if embeddings.dim() != 3:
        raise ValueError(f'SIGReg expects (T, B, D) embeddings, got {tuple(embeddings.shape)}')
    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()  # cos/sin sums of thousands of terms need float32
    dim = embeddings.shape[-1]
    use_dist = _distributed(group) if distributed is None else bool(distributed)
    if directions is None:
        directions = random_directions(dim, num_directions, device=embeddings.device,
                                       dtype=embeddings.dtype, generator=generator, seed=seed)
        if use_dist:
            directions = directions.contiguous()
            src = 0 if group is None else dist.get_global_rank(group, 0)
            dist.broadcast(directions, src=src, group=group)
    elif directions.shape[0] != dim:
        raise ValueError(f'directions have {directions.shape[0]} rows, embeddings have {dim} dims')
    directions = directions.to(device=embeddings.device, dtype=embeddings.dtype)
    t, target, weights = quadrature(knots, t_max, device=embeddings.device,
                                    dtype=embeddings.dtype)

    x = (embeddings @ directions).unsqueeze(-1) * t            # (T, B, M, K)
    sums = torch.stack([x.cos().sum(dim=1), x.sin().sum(dim=1)])  # (2, T, M, K)
    batch = embeddings.shape[1]
    if use_dist:
        import torch.distributed.nn.functional as dist_nn
        sums = dist_nn.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        count = torch.tensor([float(batch)], device=embeddings.device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
        batch = count.item()
    cos_mean, sin_mean = sums / batch
    err = (cos_mean - target).square() + sin_mean.square()      # (T, M, K)
    return ((err @ weights) * batch).mean()


class SIGReg(torch.nn.Module):
    """Module form of :func:`sigreg` with the sizes of a :class:`ModelConfig`."""

    def __init__(self, num_directions: int = 1024, knots: int = 17, t_max: float = 3.0):
        super().__init__()
        self.num_directions, self.knots, self.t_max = num_directions, knots, t_max

    @classmethod
    def from_config(cls, config: ModelConfig) -> 'SIGReg':
        return cls(config.sigreg_directions, config.sigreg_knots, config.sigreg_t_max)

    def forward(self, embeddings: torch.Tensor, **kwargs) -> torch.Tensor:
        return sigreg(embeddings, self.num_directions, self.knots, self.t_max, **kwargs)
