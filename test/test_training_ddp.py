"""Distributed training on CPU: two gloo ranks against one process on the same global batch."""

import os
from pathlib import Path
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from lewm_ros import cli
from lewm_ros.model import LeWM, load_checkpoint, ModelConfig
from lewm_ros.training.metrics import read_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = dict(image_size=16, patch_size=8, encoder_width=24, encoder_depth=1,
                   encoder_mlp=48, projector_hidden=32, latent_dim=16, predictor_depth=1,
                   predictor_mlp=32, action_hidden=32, sigreg_directions=32, history=2,
                   frameskip=2)
GLOBAL_BATCH = 8
SIGREG_SEED = 11


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tiny_model() -> LeWM:
    torch.manual_seed(0)
    return LeWM(ModelConfig.preset('small', **TINY_CONFIG)).eval()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (GLOBAL_BATCH, 3, 16, 16, 3), dtype=torch.uint8,
                           generator=generator)
    actions = torch.randn(GLOBAL_BATCH, 3, 6, generator=generator)
    return pixels, actions


def gradients(model: LeWM) -> dict:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()
            if p.grad is not None}


def _rank_worker(rank: int, world_size: int, port: int, output: str) -> None:
    """Compute one rank's loss and DDP-averaged gradients on its half of the global batch."""
    from safetensors.torch import save_file

    from lewm_ros.training.train import _make_loss_module

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        model = tiny_model()
        module = torch.nn.parallel.DistributedDataParallel(_make_loss_module(model))
        pixels, actions = global_batch()
        local = GLOBAL_BATCH // world_size
        part = slice(rank * local, (rank + 1) * local)
        out = module(pixels[part], actions[part], SIGREG_SEED)
        out['loss'].backward()
        tensors = {f'grad.{name}': value for name, value in gradients(model).items()}
        for key in ('pred_loss', 'sigreg_loss'):
            tensors[key] = out[key].detach().reshape(1)
        save_file(tensors, os.path.join(output, f'rank{rank}.safetensors'))
        # Tearing gloo down while the peer is still communicating can abort the process.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match_single_process(tmp_path):
    from safetensors.torch import load_file

    # Eval mode: BatchNorm uses running statistics, so the two ranks see the same function as
    # one process and only the batch split differs.
    model = tiny_model()
    pixels, actions = global_batch()
    reference = model.loss(pixels, actions, seed=SIGREG_SEED)
    reference['loss'].backward()
    expected = gradients(model)

    torch.multiprocessing.spawn(_rank_worker, args=(2, free_port(), str(tmp_path)), nprocs=2,
                                join=True)
    ranks = [load_file(str(tmp_path / f'rank{rank}.safetensors')) for rank in range(2)]
    pred_mean = (ranks[0]['pred_loss'] + ranks[1]['pred_loss']) / 2
    expected_pred = float(reference['pred_loss'].detach())
    expected_sigreg = float(reference['sigreg_loss'].detach())
    assert float(pred_mean) == pytest.approx(expected_pred, rel=1e-5)
    for rank in ranks:
        # SIGReg is the statistic of the global batch on every rank.
        assert float(rank['sigreg_loss']) == pytest.approx(expected_sigreg, rel=1e-5)
    for name, grad in expected.items():
        for rank in ranks:
            assert torch.allclose(rank[f'grad.{name}'], grad, rtol=1e-4, atol=1e-6), name


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'tiny.h5'
    assert cli.main(['collect', str(path), '--episodes', '6', '--steps', '30',
                     '--image-size', '16', '--seed', '4']) == 0
    return path


def test_torchrun_two_gloo_ranks_train(tiny_data, tmp_path):
    output = tmp_path / 'ddp'
    overrides = []
    for key, value in TINY_CONFIG.items():
        if key not in ('history', 'frameskip'):
            overrides += ['--set', f'{key}={value}']
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc-per-node=2',
        '--master-addr=127.0.0.1', f'--master-port={free_port()}',
        '-m', 'lewm_ros.training.train', str(tiny_data), '-o', str(output), '--steps', '3',
        '--batch-size', '8', '--log-every', '1', '--val-every', '3', '--threads', '1',
        '--no-progress', '--device', 'cpu', '--history', '2', '--frameskip', '2', *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    # The file is new, so rank 0 stores its action statistics while loading. Rank 1 must wait
    # for that: opening an HDF5 file that another process writes fails with errno 11.
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The trainer compares every parameter with rank 0's copy after the last step.
    assert 'all 2 ranks hold identical parameters' in completed.stderr
    model = load_checkpoint(output / 'last')
    assert model.checkpoint_info['metadata']['training']['world_size'] == 2
    steps = [r['step'] for r in read_metrics(output / 'metrics.jsonl') if r['split'] == 'train']
    assert steps == [1, 2, 3]
