"""Checkpoint I/O: ``model.safetensors`` + ``config.json`` in a directory; never unpickles.

``config.json`` layout (format version 1)::

    {
      "format_version": 1,
      "lewm_ros_version": "0.1.0",
      "model": {...ModelConfig.to_dict(): preset, every size, image size and preprocessing,
                action_dim, frameskip, history, action_mean/std, joint_names,
                control_period, data_fingerprint...},
      "weights": {"file": "model.safetensors", "sha256": "...", "num_parameters": N},
      "metadata": {...any other keyword given to save_checkpoint...}
    }
"""

import hashlib
import json
import os
from pathlib import Path

from .config import ModelConfig
from .lewm import LeWM

FORMAT_VERSION = 1
WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it describes."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _list(names, limit: int = 10) -> str:
    names = sorted(names)
    shown = ', '.join(names[:limit])
    return shown + (f' (+{len(names) - limit} more)' if len(names) > limit else '')


def save_checkpoint(model: LeWM, directory: str | os.PathLike, **metadata) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    Keywords that are :class:`ModelConfig` fields (``action_mean``, ``joint_names``,
    ``data_fingerprint``, ...) update the saved config (not ``model.config``); any other
    keyword is stored under ``"metadata"`` and must be JSON-serialisable.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    import lewm_ros

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    field_names = set(ModelConfig().to_dict())
    config_changes = {k: v for k, v in metadata.items() if k in field_names}
    extra = {k: v for k, v in metadata.items() if k not in field_names}
    config = model.config.replace(**config_changes) if config_changes else model.config
    config.validate()
    try:
        json.dumps(extra)
    except TypeError as error:  # fail before anything is written
        raise ValueError(f'checkpoint metadata must be JSON-serialisable: {error}') from error

    state = {name: tensor.detach().to('cpu').contiguous()
             for name, tensor in model.state_dict().items()}
    weights_path = directory / WEIGHTS_FILE
    tmp_weights = directory / (WEIGHTS_FILE + '.tmp')
    save_file(state, str(tmp_weights), metadata={'format': 'pt',
                                                 'lewm_format_version': str(FORMAT_VERSION)})
    os.replace(tmp_weights, weights_path)
    document = {
        'format_version': FORMAT_VERSION,
        'lewm_ros_version': lewm_ros.__version__,
        'model': config.to_dict(),
        'weights': {
            'file': WEIGHTS_FILE,
            'sha256': file_sha256(weights_path),
            'num_parameters': sum(p.numel() for p in model.parameters()),
        },
        'metadata': extra,
    }
    tmp_config = directory / (CONFIG_FILE + '.tmp')
    tmp_config.write_text(json.dumps(document, indent=2, sort_keys=True) + '\n')
    os.replace(tmp_config, directory / CONFIG_FILE)
    return directory


def read_checkpoint_config(directory: str | os.PathLike) -> dict:
    """Read and check ``config.json`` of a checkpoint directory (no weights are read)."""
    directory = Path(directory)
    if directory.is_file():
        raise CheckpointError(f'checkpoint {directory} is a file; give the directory that '
                              f'contains {CONFIG_FILE} and {WEIGHTS_FILE}')
    if not directory.is_dir():
        raise CheckpointError(f'checkpoint directory {directory} does not exist')
    path = directory / CONFIG_FILE
    if not path.is_file():
        if (directory / 'last' / CONFIG_FILE).is_file():
            raise CheckpointError(f'{directory} is a training run, not a checkpoint; give '
                                  f'{directory / "last"} or {directory / "best"}')
        raise CheckpointError(f'checkpoint {directory}: missing {CONFIG_FILE}')
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f'checkpoint {directory}: {CONFIG_FILE} is not valid JSON '
                              f'({error})') from error
    if not isinstance(document, dict) or 'format_version' not in document:
        raise CheckpointError(f'checkpoint {directory}: {CONFIG_FILE} has no format_version')
    if document['format_version'] != FORMAT_VERSION:
        raise CheckpointError(
            f'checkpoint {directory}: unknown format version {document["format_version"]!r} '
            f'(this lewm_ros reads version {FORMAT_VERSION})')
    if not isinstance(document.get('model'), dict):
        raise CheckpointError(f'checkpoint {directory}: {CONFIG_FILE} has no "model" section')
    return document


def load_checkpoint(directory: str | os.PathLike, device=None, dtype=None,
                    strict: bool = True) -> LeWM:
    """Rebuild a :class:`LeWM` from a checkpoint directory and return it in eval mode.

    Args:
        directory: the checkpoint directory.
        device, dtype: where and in which floating dtype to put the model (default: CPU,
            float32 as saved).
        strict: missing or unexpected weight names are an error (else they are tolerated and
            the missing ones keep their fresh initialisation). Shape mismatches always are.

    Raises:
        CheckpointError: missing files, unknown format version, invalid config, sha256
            mismatch, a corrupt or truncated weights file, missing or extra keys (named),
            shape mismatches (named).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    document = read_checkpoint_config(directory)
    try:
        config = ModelConfig.from_dict(document['model'])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f'checkpoint {directory}: invalid model config: {error}') from error
    weights = document.get('weights') or {}
    weights_path = directory / weights.get('file', WEIGHTS_FILE)
    if not weights_path.is_file():
        raise CheckpointError(f'checkpoint {directory}: missing weights file {weights_path.name}')
    expected_sha = weights.get('sha256')
    if expected_sha:
        actual_sha = file_sha256(weights_path)
        if actual_sha != expected_sha:
            raise CheckpointError(
                f'checkpoint {directory}: sha256 mismatch for {weights_path.name} (expected '
                f'{expected_sha}, file has {actual_sha}); the file is corrupt, truncated or '
                'does not belong to this config.json')
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f'checkpoint {directory}: weights file {weights_path.name} is '
                              f'corrupt or truncated ({error})') from error

    model = LeWM(config)
    expected = model.state_dict()
    missing = set(expected) - set(state)
    extra = set(state) - set(expected)
    if strict and (missing or extra):
        parts = []
        if missing:
            parts.append(f'missing keys: {_list(missing)}')
        if extra:
            parts.append(f'unexpected keys: {_list(extra)}')
        raise CheckpointError(f'checkpoint {directory}: weights do not match the config '
                              f'({"; ".join(parts)})')
    mismatched = [f'{name} {tuple(state[name].shape)} vs expected {tuple(tensor.shape)}'
                  for name, tensor in expected.items()
                  if name in state and state[name].shape != tensor.shape]
    if mismatched:
        raise CheckpointError(f'checkpoint {directory}: shape mismatch: {_list(mismatched)}')
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.to(device=device or 'cpu')
    if dtype is not None:
        model.to(dtype=dtype)
    model.checkpoint_info = {'directory': str(directory), 'sha256': expected_sha,
                             'lewm_ros_version': document.get('lewm_ros_version'),
                             'metadata': document.get('metadata', {})}
    return model.eval()
