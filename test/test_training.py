"""Tests of ``lewm train``: checkpoints, exact resumption, metrics, schedule and helpers."""

import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch

from lewm_ros import cli
from lewm_ros.model import load_checkpoint
from lewm_ros.training.data import split_episodes
from lewm_ros.training.metrics import effective_rank, latent_std_summary, read_metrics
from lewm_ros.training.state import load_training_state, save_training_state
from lewm_ros.training.train import lr_factor, parse_overrides

# A model of about 20 k parameters on 16 px frames: a few steps take a second.
TINY_MODEL = [
    '--set', 'image_size=16', '--set', 'patch_size=8', '--set', 'encoder_width=24',
    '--set', 'encoder_depth=1', '--set', 'encoder_mlp=48', '--set', 'projector_hidden=32',
    '--set', 'latent_dim=16', '--set', 'predictor_depth=1', '--set', 'predictor_mlp=32',
    '--set', 'action_hidden=32', '--set', 'sigreg_directions=32',
    '--history', '2', '--frameskip', '2',
]
TRAIN_METRICS = ('loss', 'pred_loss', 'sigreg_loss', 'lr', 'grad_norm', 'effective_rank',
                 'latent_std_mean', 'latent_std_min', 'latent_std_max', 'clips_per_s', 'epoch')
VAL_METRICS = ('loss', 'pred_loss', 'sigreg_loss', 'effective_rank', 'latent_std_mean')


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """Six simulated episodes of 30 steps with 16 px frames, recorded by lewm collect."""
    path = tmp_path_factory.mktemp('data') / 'tiny.h5'
    status = cli.main(['collect', str(path), '--episodes', '6', '--steps', '30',
                       '--image-size', '16', '--seed', '3'])
    assert status == 0
    return path


def train(data, output, *extra):
    argv = ['train', str(data), '-o', str(output), '--steps', '6', '--batch-size', '8',
            '--log-every', '1', '--val-every', '3', '--save-every', '3', '--threads', '1',
            '--no-progress', '--lr', '1e-3', '--seed', '5', *TINY_MODEL, *extra]
    return cli.main(argv)


@pytest.fixture(scope='module')
def full_run(tiny_data, tmp_path_factory):
    output = tmp_path_factory.mktemp('runs') / 'full'
    assert train(tiny_data, output) == 0
    return output


def test_checkpoint_loads_with_data_metadata(full_run, tiny_data):
    from lewm_ros.data.clips import action_stats, data_fingerprint

    model = load_checkpoint(full_run / 'last')
    config = model.config
    mean, std = action_stats(tiny_data)
    assert config.image_size == 16
    assert config.history == 2
    assert config.frameskip == 2
    assert config.action_dim == 3
    assert np.allclose(config.action_mean, mean)
    assert np.allclose(config.action_std, std)
    assert config.joint_names == ['base_yaw', 'shoulder_pitch', 'elbow_pitch']
    assert config.control_period == pytest.approx(0.1)
    assert config.data_fingerprint == data_fingerprint(tiny_data)
    assert model.checkpoint_info['metadata']['training']['step'] == 6
    for name in ('best', 'last'):
        assert (full_run / name / 'training_state.safetensors').is_file()
        assert (full_run / name / 'training_state.json').is_file()
    assert (full_run / 'curves.png').stat().st_size > 10_000


def test_resume_matches_uninterrupted_run(full_run, tiny_data, tmp_path):
    resumed = tmp_path / 'resumed'
    status = cli.main(['train', str(tiny_data), '-o', str(resumed), '--resume',
                       str(full_run / 'step_000003'), '--threads', '1', '--no-progress',
                       '--log-every', '1', '--val-every', '3', '--save-every', '3'])
    assert status == 0
    full = {r['step']: r for r in read_metrics(full_run / 'metrics.jsonl')
            if r['split'] == 'train'}
    again = {r['step']: r for r in read_metrics(resumed / 'metrics.jsonl')
             if r['split'] == 'train'}
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):
        assert again[step]['loss'] == pytest.approx(full[step]['loss'], rel=1e-5)
        assert again[step]['lr'] == pytest.approx(full[step]['lr'], rel=1e-9)
    first = load_checkpoint(full_run / 'last').state_dict()
    second = load_checkpoint(resumed / 'last').state_dict()
    for name, tensor in first.items():
        assert torch.allclose(tensor, second[name], atol=1e-6), name


def test_metrics_log_every_metric(full_run):
    records = read_metrics(full_run / 'metrics.jsonl')
    train_records = [r for r in records if r['split'] == 'train']
    val_records = [r for r in records if r['split'] == 'val']
    assert [r['step'] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert [r['step'] for r in val_records] == [3, 6]
    for record in train_records:
        for key in TRAIN_METRICS:
            assert isinstance(record[key], float), (key, record)
            assert math.isfinite(record[key]), (key, record)
    for record in val_records:
        for key in VAL_METRICS:
            assert math.isfinite(record[key]), (key, record)
    # The learning rate follows warm-up then cosine decay over the 6 steps.
    rates = [r['lr'] for r in train_records]
    assert rates[0] == pytest.approx(1e-3)
    assert rates == sorted(rates, reverse=True)


def test_resume_rejects_shipped_style_directory(full_run, tiny_data, tmp_path):
    bare = tmp_path / 'bare'
    bare.mkdir()
    for name in ('config.json', 'model.safetensors'):
        (bare / name).write_bytes((full_run / 'last' / name).read_bytes())
    status = cli.main(['train', str(tiny_data), '-o', str(tmp_path / 'out'), '--resume',
                       str(bare), '--no-progress'])
    assert status == 2


def test_resume_finished_run_trains_nothing(full_run, tiny_data, tmp_path, caplog):
    output = tmp_path / 'again'
    with caplog.at_level('INFO'):
        status = cli.main(['train', str(tiny_data), '-o', str(output), '--resume',
                           str(full_run / 'last'), '--threads', '1', '--no-progress'])
    assert status == 0
    assert 'is at step 6 of 6: nothing to train' in caplog.text
    assert f'--init {full_run / "last"}' in caplog.text
    assert not output.exists()


def test_two_files_share_action_stats(tiny_data, tmp_path):
    from lewm_ros.data.clips import compute_action_stats, data_fingerprint

    second = tmp_path / 'random.h5'
    assert cli.main(['collect', str(second), '--episodes', '4', '--steps', '30',
                     '--image-size', '16', '--seed', '9', '--policy', 'random_delta']) == 0
    output = tmp_path / 'both'
    assert cli.main(['train', str(tiny_data), str(second), '-o', str(output), '--steps', '2',
                     '--batch-size', '8', '--no-progress', '--threads', '1',
                     *TINY_MODEL]) == 0
    actions = []
    for path in (tiny_data, second):
        with h5py.File(path, 'r') as file:
            actions.append(file['action'][()])
    mean, std = compute_action_stats(np.concatenate(actions))
    model = load_checkpoint(output / 'last')
    assert np.allclose(model.config.action_mean, mean, atol=1e-7)
    assert np.allclose(model.config.action_std, std, atol=1e-7)
    assert model.config.data_fingerprint not in (data_fingerprint(tiny_data),
                                                 data_fingerprint(second))
    training = model.checkpoint_info['metadata']['training']
    assert training['data'] == [str(tiny_data), str(second)]
    # 10 episodes in all: one is held out for validation.
    assert len(training['val_episodes']) == 1
    assert training['train_episodes'] == 9


def test_freeze_encoder_keeps_initial_weights(tiny_data, tmp_path):
    from lewm_ros.model import LeWM

    output = tmp_path / 'frozen'
    assert train(tiny_data, output, '--freeze-encoder') == 0
    trained = load_checkpoint(output / 'last')
    torch.manual_seed(5)
    initial = LeWM(trained.config)
    for name, tensor in initial.encoder.state_dict().items():
        assert torch.equal(tensor, trained.encoder.state_dict()[name]), name
    for name, tensor in initial.projector.named_parameters():
        assert torch.equal(tensor, dict(trained.projector.named_parameters())[name]), name
    predictor = initial.predictor.state_dict()
    changed = [name for name, tensor in trained.predictor.state_dict().items()
               if not torch.equal(tensor, predictor[name])]
    assert changed


def test_frozen_init_trains_predictor_only(full_run, tiny_data, tmp_path):
    from lewm_ros.data.clips import data_fingerprint

    init = tmp_path / 'init'
    shutil.copytree(full_run / 'last', init)
    output = tmp_path / 'stage2'
    assert cli.main(['train', str(tiny_data), '-o', str(output), '--init', str(init),
                     '--freeze-encoder', '--steps', '4', '--batch-size', '8', '--lr', '1e-2',
                     '--val-every', '2', '--threads', '1', '--no-progress', '--seed', '6']) == 0
    initial = load_checkpoint(init)
    trained = load_checkpoint(output / 'last')
    # The encoder side, BatchNorm statistics included, is the initial checkpoint's.
    for part in ('encoder', 'projector'):
        for name, tensor in getattr(initial, part).state_dict().items():
            assert torch.equal(tensor, getattr(trained, part).state_dict()[name]), name
    predictor = trained.predictor.state_dict()
    assert any(not torch.equal(tensor, predictor[name])
               for name, tensor in initial.predictor.state_dict().items())
    assert trained.config.action_mean == initial.config.action_mean
    assert trained.config.action_std == initial.config.action_std
    assert trained.config.data_fingerprint == data_fingerprint(tiny_data)
    training = trained.checkpoint_info['metadata']['training']
    assert training['init'] == str(init)
    assert training['frozen_encoder'] is True
    records = read_metrics(output / 'metrics.jsonl')
    val = [r for r in records if r['split'] == 'val']
    assert [r['step'] for r in val] == [2, 4]
    assert all(math.isfinite(r['pred_loss']) and r['pred_loss'] > 0 for r in val)
    # Resuming needs no --init checkpoint: it re-encodes the frames with the run's own frozen
    # encoder and ends where the uninterrupted run did.
    shutil.rmtree(init)
    resumed = tmp_path / 'stage2_resumed'
    assert cli.main(['train', str(tiny_data), '-o', str(resumed), '--resume',
                     str(output / 'step_000002'), '--threads', '1', '--no-progress']) == 0
    again = load_checkpoint(resumed / 'last').state_dict()
    for name, tensor in trained.state_dict().items():
        assert torch.allclose(tensor, again[name], atol=1e-6), name


def test_unfrozen_init_tunes_encoder(full_run, tiny_data, tmp_path):
    output = tmp_path / 'tuned'
    assert cli.main(['train', str(tiny_data), '-o', str(output), '--init',
                     str(full_run / 'last'), '--steps', '2', '--batch-size', '8', '--lr', '1e-2',
                     '--threads', '1', '--no-progress']) == 0
    initial = load_checkpoint(full_run / 'last')
    tuned = load_checkpoint(output / 'last')
    encoder = tuned.encoder.state_dict()
    assert any(not torch.equal(tensor, encoder[name])
               for name, tensor in initial.encoder.state_dict().items())
    assert tuned.config.action_mean == initial.config.action_mean
    assert tuned.config.latent_dim == initial.config.latent_dim == 16


def test_latent_clips_match_encoded_pixels(full_run, tiny_data):
    from lewm_ros.training.data import encode_episode_files, EpisodeFiles, LatentClipSet

    model = load_checkpoint(full_run / 'last')
    files = EpisodeFiles([tiny_data])
    # Statistics other than the file's, as with --init: blocks are rescaled to them.
    files.action_mean = np.asarray(files.action_mean) + 0.01
    files.action_std = np.asarray(files.action_std) * 2.0
    pixel_clips = files.clips([1, 3, 4], history=2, frameskip=2)
    assert pixel_clips.rescale[0] is not None
    latents = encode_episode_files([tiny_data], model.encode_frames, chunk=7)
    with h5py.File(tiny_data, 'r') as file:
        assert latents[str(tiny_data)].shape == (len(file['pixels']), model.config.latent_dim)
    latent_clips = LatentClipSet(pixel_clips, latents)
    assert len(latent_clips) == len(pixel_clips)
    indices = [0, 5, len(pixel_clips) - 1]
    pixels, blocks = pixel_clips.batch(indices)
    encoded, latent_blocks = latent_clips.batch(indices)
    with torch.no_grad():
        expected = model.encode_frames(pixels.reshape(-1, *pixels.shape[2:]))
    assert encoded.shape == (3, 3, model.config.latent_dim)
    assert torch.allclose(encoded, expected.reshape(encoded.shape), atol=1e-5)
    assert torch.equal(latent_blocks, blocks)


def test_init_rejects_conflicting_options(full_run, tiny_data, tmp_path, caplog):
    base = ['train', str(tiny_data), '-o', str(tmp_path / 'out'), '--steps', '1',
            '--no-progress']
    init = str(full_run / 'last')
    assert cli.main([*base, '--init', init, '--set', 'latent_dim=8', '--lambda', '0.5']) == 2
    assert 'drop --set latent_dim, --lambda' in caplog.text
    caplog.clear()
    assert cli.main([*base, '--init', init, '--preset', 'paper']) == 2
    assert 'drop --preset' in caplog.text
    caplog.clear()
    assert cli.main([*base, '--init', init, '--resume', init]) == 2
    assert '--init and --resume exclude each other' in caplog.text
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'model.safetensors').write_bytes((full_run / 'last' / 'model.safetensors')
                                              .read_bytes())
    document = json.loads((full_run / 'last' / 'config.json').read_text())
    document['model']['joint_names'] = ['a', 'b', 'c']
    (other / 'config.json').write_text(json.dumps(document))
    caplog.clear()
    assert cli.main([*base, '--init', str(other)]) == 2
    assert "['a', 'b', 'c']" in caplog.text
    assert 'record the same joints' in caplog.text


def test_lr_schedule_values():
    assert lr_factor(0, 100, 0.05) == pytest.approx(0.2)
    assert lr_factor(4, 100, 0.05) == pytest.approx(1.0)
    assert lr_factor(99, 100, 0.05) == pytest.approx(0.0, abs=1e-12)
    # Halfway through the cosine part the factor is 0.5.
    assert lr_factor(5 + 47, 100, 0.05) == pytest.approx(0.5, abs=0.02)
    assert lr_factor(0, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))


def test_split_episodes_by_seed():
    train_a, val_a = split_episodes(50, 0.1, seed=1)
    train_b, val_b = split_episodes(50, 0.1, seed=1)
    train_c, val_c = split_episodes(50, 0.1, seed=2)
    assert (train_a, val_a) == (train_b, val_b)
    assert val_a != val_c
    assert len(val_a) == 5
    assert sorted(train_a + val_a) == list(range(50))
    assert split_episodes(1, 0.1, seed=0) == ([0], [])
    assert split_episodes(2, 0.1, seed=0)[1] != []


def test_effective_rank_known_values():
    generator = torch.Generator().manual_seed(0)
    line = torch.randn(200, 1, generator=generator) * torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-3)
    # Four orthogonal directions with equal spread give rank 4.
    square = torch.cat([torch.eye(4), -torch.eye(4)]) * 3.0
    assert effective_rank(square) == pytest.approx(4.0, abs=1e-4)
    isotropic = torch.randn(4000, 16, generator=generator)
    assert 15.0 < effective_rank(isotropic) <= 16.0
    summary = latent_std_summary(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    assert summary['latent_std_min'] == pytest.approx(0.0)
    assert summary['latent_std_max'] == pytest.approx(math.sqrt(2.0))


def test_training_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        scheduler.step()
    save_training_state(tmp_path, optimizer, scheduler, step=3, extra={'note': 'x'})
    expected_rng = torch.rand(3)

    restored_optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    restored_scheduler = torch.optim.lr_scheduler.LambdaLR(restored_optimizer,
                                                           lambda step: 1.0 / (step + 1))
    info = load_training_state(tmp_path, restored_optimizer, restored_scheduler)
    assert info == {'step': 3, 'extra': {'note': 'x'}}
    assert torch.equal(torch.rand(3), expected_rng)
    original, restored = optimizer.state_dict(), restored_optimizer.state_dict()
    assert original['param_groups'] == restored['param_groups']
    for index, values in original['state'].items():
        for key, value in values.items():
            assert torch.equal(value, restored['state'][index][key]), (index, key)
    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert 'pickle' not in json.dumps(json.loads((tmp_path / 'training_state.json').read_text()))


def test_override_errors_name_the_field():
    assert parse_overrides(['latent_dim=32', 'predictor_dropout=0.2']) == {
        'latent_dim': 32, 'predictor_dropout': 0.2}
    with pytest.raises(ValueError, match='latent_size'):
        parse_overrides(['latent_size=32'])
    with pytest.raises(ValueError, match='FIELD=VALUE'):
        parse_overrides(['latent_dim'])


def test_train_rejects_missing_data(tmp_path):
    status = cli.main(['train', str(tmp_path / 'missing.h5'), '-o', str(tmp_path / 'run'),
                       '--no-progress'])
    assert status == 2
