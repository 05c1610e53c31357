"""SIGReg: known values, ordering of failure cases, reproducibility, distributed equality."""

import datetime
import math
import os
import socket
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lewm_ros.model import random_directions, sigreg
from lewm_ros.model.sigreg import quadrature


def reference_sigreg(z: np.ndarray, directions: np.ndarray, knots: int = 17,
                     t_max: float = 3.0) -> float:
    """Direct float64 transcription of research notes section 2 (complex ECF, loops)."""
    t = np.linspace(0.0, t_max, knots)
    dt = t_max / (knots - 1)
    trapezoid = np.full(knots, 2 * dt)
    trapezoid[0] = trapezoid[-1] = dt
    window = np.exp(-t ** 2 / 2)
    values = []
    for step in range(z.shape[0]):
        batch = z.shape[1]
        for m in range(directions.shape[1]):
            h = z[step] @ directions[:, m]
            ecf = np.exp(1j * np.outer(t, h)).mean(axis=1)
            integrand = np.abs(ecf - np.exp(-t ** 2 / 2)) ** 2
            values.append(batch * np.sum(trapezoid * window * integrand))
    return float(np.mean(values))


def null_expectation(knots: int = 17, t_max: float = 3.0) -> float:
    """E[SIGReg] for i.i.d. N(0, 1) projections: sum_k w_k (1 - exp(-t_k^2)), any batch size."""
    t, _, weights = quadrature(knots, t_max, dtype=torch.float64)
    return float((weights * (1 - torch.exp(-t ** 2))).sum())


def test_matches_reference_transcription():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    directions = random_directions(5, 6, seed=1, dtype=torch.float64)
    value = sigreg(z, directions=directions)
    assert value.item() == pytest.approx(reference_sigreg(z.numpy(), directions.numpy()),
                                         rel=1e-10)


def test_quadrature_weights():
    t, target, weights = quadrature(17, 3.0, dtype=torch.float64)
    assert t[0] == 0
    assert t[-1] == 3
    assert len(t) == 17
    # Doubled trapezoid: integral of exp(-t^2/2) over [-3, 3] is sqrt(2 pi) erf(3 / sqrt 2).
    assert float(weights.sum()) == pytest.approx(math.sqrt(2 * math.pi) * math.erf(3 / 2 ** .5),
                                                 rel=2e-3)
    assert torch.allclose(target, torch.exp(-t ** 2 / 2))


def test_gaussian_is_at_null_level_and_independent_of_batch():
    expected = null_expectation()  # about 1.06
    gen = torch.Generator().manual_seed(0)
    values = []
    for batch in (256, 4096):
        z = torch.randn(4, batch, 32, generator=gen)
        values.append(sigreg(z, 512, seed=2).item())
    for value in values:
        assert value == pytest.approx(expected, rel=0.15)


def _cases(batch: int = 1024, dim: int = 32) -> dict:
    gen = torch.Generator().manual_seed(3)
    gaussian = torch.randn(2, batch, dim, generator=gen)
    basis = torch.linalg.qr(torch.randn(dim, 2, generator=gen))[0]
    return {
        'gaussian': gaussian,
        'scaled': gaussian * 2.0,
        'shifted': gaussian + 0.5,
        'low_rank': torch.randn(2, batch, 2, generator=gen) @ basis.T,
        'collapsed': torch.full((2, batch, dim), 0.3),
    }


def test_failure_cases_are_large_and_ordered():
    values = {name: sigreg(z, 512, seed=4).item() for name, z in _cases().items()}
    assert values['gaussian'] < 1.5
    for name in ('scaled', 'shifted', 'low_rank', 'collapsed'):
        assert values[name] > 20 * values['gaussian'], values
    # Ordering by distance from N(0, I) as seen through 1-D projections: a point mass is the
    # worst; a rank-2 cloud in 32 dims is nearly a point along most directions (projected
    # variance about 2/32); doubling the scale is milder, and a shift of 0.5 per coordinate
    # (a projected shift of about N(0, 0.5^2)) mildest.
    assert (values['gaussian'] < values['shifted'] < values['scaled'] < values['low_rank']
            < values['collapsed']), values


def test_collapse_grows_with_batch():
    small = sigreg(torch.zeros(1, 100, 8), 64, seed=0).item()
    large = sigreg(torch.zeros(1, 1000, 8), 64, seed=0).item()
    assert large == pytest.approx(10 * small, rel=1e-5)


def test_gradients_are_finite_and_point_away_from_collapse():
    for z in (torch.randn(3, 64, 16), torch.full((3, 64, 16), 0.5), torch.zeros(3, 64, 16)):
        z = z.clone().requires_grad_()
        sigreg(z, 128, seed=0).backward()
        assert torch.isfinite(z.grad).all()
    # One gradient step on a nearly collapsed cloud lowers the statistic.
    z = (torch.randn(2, 256, 16) * 0.05).requires_grad_()
    before = sigreg(z, 256, seed=1)
    before.backward()
    after = sigreg(z.detach() - 0.01 * z.grad, 256, seed=1)
    assert after.item() < before.item()


def test_reproducible_with_seed_or_generator():
    z = torch.randn(2, 128, 16)
    assert sigreg(z, 64, seed=7).item() == sigreg(z, 64, seed=7).item()
    assert sigreg(z, 64, seed=7).item() != sigreg(z, 64, seed=8).item()
    a = sigreg(z, 64, generator=torch.Generator().manual_seed(5)).item()
    b = sigreg(z, 64, generator=torch.Generator().manual_seed(5)).item()
    assert a == b
    directions = random_directions(16, 64, seed=7)
    assert torch.allclose(directions.norm(dim=0), torch.ones(64))
    assert sigreg(z, directions=directions).item() == pytest.approx(
        sigreg(z, 64, seed=7).item(), rel=1e-6)


def test_two_dim_input_and_dtype():
    z = torch.randn(64, 8, dtype=torch.float64)
    value = sigreg(z, 32, seed=0)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(sigreg(z.unsqueeze(0), 32, seed=0).item())
    half = sigreg(z.to(torch.bfloat16), 32, seed=0)  # computed in float32 internally
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(value.item(), rel=0.05)


# --------------------------------------------------------------------------------------------
# Distributed: two gloo ranks on CPU equal one process on the concatenated batch.

SIZES = (6, 10)  # uneven per-rank batches: the global batch size must be used
DIM, DIRECTIONS, STEPS = 8, 64, 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        data = torch.load(os.path.join(folder, 'inputs.pt'))
        start = sum(SIZES[:rank])
        local = data['z'][:, start:start + SIZES[rank]].clone().requires_grad_()
        # A different seed on each rank: the directions of rank 0 must be used everywhere.
        value = sigreg(local, DIRECTIONS, seed=100 + rank)
        value.backward()
        # A parameter shared by the ranks, with DDP's gradient averaging done by hand.
        weight = data['weight'].clone().requires_grad_()
        shared_value = sigreg(data['x'][:, start:start + SIZES[rank]] @ weight, DIRECTIONS,
                              seed=100 + rank)
        shared_value.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)
        grad /= world
        torch.save({'value': value.detach(), 'grad': local.grad,
                    'shared_value': shared_value.detach(), 'weight_grad': grad},
                   os.path.join(folder, f'rank{rank}.pt'))
        # Tearing gloo down while the peer is still communicating can abort the process.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_distributed_equals_single_process_on_global_batch():
    gen = torch.Generator().manual_seed(0)
    total = sum(SIZES)
    z = torch.randn(STEPS, total, DIM, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    x = torch.randn(STEPS, total, DIM, generator=gen, dtype=torch.float64)
    weight = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64) * 0.5
    with tempfile.TemporaryDirectory() as folder:
        torch.save({'z': z, 'x': x, 'weight': weight}, os.path.join(folder, 'inputs.pt'))
        for attempt in range(3):
            # Another process can take the free port before the rendezvous, and gloo can abort
            # a worker at teardown. A fresh start fixes both. Wrong values never raise in the
            # workers, so they still fail the assertions below.
            try:
                mp.spawn(_worker, args=(len(SIZES), _free_port(), folder), nprocs=len(SIZES),
                         join=True)
                break
            except (mp.ProcessRaisedException, mp.ProcessExitedException):
                if attempt == 2:
                    raise
        results = [torch.load(os.path.join(folder, f'rank{r}.pt')) for r in range(len(SIZES))]

    directions = random_directions(DIM, DIRECTIONS, seed=100, dtype=torch.float64)
    single_z = z.clone().requires_grad_()
    single = sigreg(single_z, directions=directions, distributed=False)
    single.backward()
    single_w = weight.clone().requires_grad_()
    single_shared = sigreg(x @ single_w, directions=directions, distributed=False)
    single_shared.backward()

    world = len(SIZES)
    for rank, result in enumerate(results):
        start = sum(SIZES[:rank])
        assert result['value'].item() == pytest.approx(single.item(), rel=1e-10)
        # The autograd all-reduce sums the identical upstream gradients of all ranks:
        # world_size x the single-process gradient, which DDP's 1/world_size averaging undoes.
        expected = single_z.grad[:, start:start + SIZES[rank]] * world
        torch.testing.assert_close(result['grad'], expected, rtol=1e-9, atol=1e-12)
        assert result['shared_value'].item() == pytest.approx(single_shared.item(), rel=1e-10)
        torch.testing.assert_close(result['weight_grad'], single_w.grad, rtol=1e-9, atol=1e-12)
