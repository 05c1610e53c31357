"""Checkpoint I/O: bit-exact round trip, complete config.json, clear errors for bad files."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
import torch

import lewm_ros
from lewm_ros.model import (CheckpointError, FORMAT_VERSION, LeWM, load_checkpoint,
                            ModelConfig, read_checkpoint_config, save_checkpoint)
from lewm_ros.model.checkpoint import file_sha256


def tiny_config(**overrides) -> ModelConfig:
    values = dict(preset_name='small', image_size=32, patch_size=8, encoder_width=32,
                  encoder_depth=2, encoder_heads=2, encoder_mlp=64, projector_hidden=64,
                  latent_dim=16, predictor_depth=2, predictor_heads=2, predictor_head_dim=8,
                  predictor_mlp=32, action_hidden=32, action_dim=3, frameskip=2, history=3,
                  sigreg_directions=32)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def trained(tmp_path):
    """Save a model with non-initial weights and BatchNorm statistics to tmp_path/ckpt."""
    torch.manual_seed(0)
    model = LeWM(tiny_config())
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    frames = torch.randint(0, 256, (4, 3, 32, 32, 3), dtype=torch.uint8)
    for _ in range(2):
        optimiser.zero_grad()
        model.loss(frames, torch.randn(4, 2, 6), seed=0)['loss'].backward()
        optimiser.step()
    directory = save_checkpoint(
        model, tmp_path / 'ckpt', action_mean=[0.1, 0.2, 0.3], action_std=[1.0, 2.0, 3.0],
        joint_names=['j1', 'j2', 'j3'], control_period=0.1, data_fingerprint='abc123',
        train_step=2)
    return model, directory


def _rewrite_weights(directory, change):
    """Apply ``change(state)`` to the weights file and fix the sha.

    Only the change under test is then wrong with the checkpoint.
    """
    path = directory / 'model.safetensors'
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))
    config = json.loads((directory / 'config.json').read_text())
    config['weights']['sha256'] = file_sha256(path)
    (directory / 'config.json').write_text(json.dumps(config))


def test_round_trip_is_bit_exact(trained):
    model, directory = trained
    loaded = load_checkpoint(directory)
    assert not loaded.training
    original = model.state_dict()
    restored = loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype
        assert torch.equal(restored[name], tensor), name
    model.eval()
    frames = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded.encode_frames(frames), model.encode_frames(frames))
        latents = torch.randn(2, 16)
        cands = torch.randn(7, 3, 6)
        past = torch.randn(1, 6)
        assert torch.equal(loaded.rollout(latents, cands, past),
                           model.rollout(latents, cands, past))


def test_config_json_holds_everything_a_consumer_needs(trained):
    model, directory = trained
    document = read_checkpoint_config(directory)
    assert document['format_version'] == FORMAT_VERSION
    assert document['lewm_ros_version'] == lewm_ros.__version__
    assert document['weights']['sha256'] == file_sha256(directory / 'model.safetensors')
    assert document['weights']['num_parameters'] == model.parameter_counts()['total']
    assert document['metadata'] == {'train_step': 2}
    saved = document['model']
    for key in ('preset_name', 'image_size', 'patch_size', 'encoder_width', 'encoder_depth',
                'latent_dim', 'predictor_depth', 'predictor_heads', 'image_mean', 'image_std',
                'action_dim', 'frameskip', 'history', 'control_period'):
        assert saved[key] == getattr(model.config, key) or list(getattr(model.config, key)) \
            == saved[key], key
    assert saved['action_mean'] == [0.1, 0.2, 0.3]
    assert saved['action_std'] == [1.0, 2.0, 3.0]
    assert saved['joint_names'] == ['j1', 'j2', 'j3']
    assert saved['data_fingerprint'] == 'abc123'
    loaded = load_checkpoint(directory)
    assert loaded.config.joint_names == ['j1', 'j2', 'j3']
    assert loaded.checkpoint_info['metadata'] == {'train_step': 2}
    # Keywords that are config fields do not alter the model that was saved.
    assert model.config.joint_names == []


def test_device_and_dtype(trained):
    _, directory = trained
    model = load_checkpoint(directory, device='cpu', dtype=torch.float64)
    assert model.dtype == torch.float64
    assert model.device.type == 'cpu'
    with torch.no_grad():
        assert model.encode_frames(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).dtype \
            == torch.float64


def test_missing_files(trained, tmp_path):
    _, directory = trained
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'nowhere')
    with pytest.raises(CheckpointError, match='is a file; give the directory'):
        load_checkpoint(directory / 'config.json')
    # A training run directory: the checkpoints are its last/ and best/.
    run = tmp_path / 'run'
    shutil.copytree(directory, run / 'last')
    with pytest.raises(CheckpointError, match=f'training run, not a checkpoint; give {run}/last'):
        load_checkpoint(run)
    (directory / 'model.safetensors').unlink()
    with pytest.raises(CheckpointError, match='missing weights file model.safetensors'):
        load_checkpoint(directory)
    (directory / 'config.json').unlink()
    with pytest.raises(CheckpointError, match='missing config.json'):
        load_checkpoint(directory)


def test_corrupt_byte_is_a_sha_mismatch(trained):
    _, directory = trained
    path = directory / 'model.safetensors'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='sha256 mismatch'):
        load_checkpoint(directory)


def test_truncated_file(trained):
    _, directory = trained
    path = directory / 'model.safetensors'
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match='sha256 mismatch'):
        load_checkpoint(directory)
    # Without a recorded sha the parser itself must catch it.
    config = json.loads((directory / 'config.json').read_text())
    del config['weights']['sha256']
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='corrupt or truncated'):
        load_checkpoint(directory)


def test_pickle_is_never_loaded(trained):
    _, directory = trained
    path = directory / 'model.safetensors'
    torch.save(LeWM(tiny_config()).state_dict(), path)  # a pickle under the expected name
    config = json.loads((directory / 'config.json').read_text())
    config['weights']['sha256'] = file_sha256(path)
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='corrupt or truncated'):
        load_checkpoint(directory)


def test_missing_and_extra_keys_are_named(trained):
    _, directory = trained
    _rewrite_weights(directory, lambda state: state.pop('predictor.norm.weight'))
    with pytest.raises(CheckpointError, match=r'missing keys: predictor\.norm\.weight'):
        load_checkpoint(directory)
    _rewrite_weights(directory, lambda state: state.update(
        {'predictor.norm.weight': torch.ones(16), 'head.extra': torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r'unexpected keys: head\.extra'):
        load_checkpoint(directory)
    model = load_checkpoint(directory, strict=False)  # tolerated when not strict
    assert torch.equal(model.predictor.norm.weight, torch.ones(16))


def test_shape_mismatch_is_named(trained):
    _, directory = trained
    _rewrite_weights(directory, lambda state: state.update(
        {'encoder.pos_embed': torch.zeros(1, 5, 32)}))
    with pytest.raises(CheckpointError, match=r'shape mismatch: encoder\.pos_embed \(1, 5, 32\)'):
        load_checkpoint(directory)


def test_config_that_does_not_match_weights(trained):
    _, directory = trained
    config = json.loads((directory / 'config.json').read_text())
    config['model']['latent_dim'] = 24
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='shape mismatch'):
        load_checkpoint(directory)


def test_unknown_format_version_and_bad_config(trained):
    _, directory = trained
    path = directory / 'config.json'
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, 'format_version': 99}))
    with pytest.raises(CheckpointError, match='unknown format version 99'):
        load_checkpoint(directory)
    path.write_text(json.dumps({**config, 'model': {**config['model'], 'bogus': 1}}))
    with pytest.raises(CheckpointError, match='bogus'):
        load_checkpoint(directory)
    path.write_text('{not json')
    with pytest.raises(CheckpointError, match='not valid JSON'):
        load_checkpoint(directory)
    assert issubclass(CheckpointError, ValueError)
