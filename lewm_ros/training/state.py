"""Training state for resumption: optimiser, scheduler, step and RNG, without pickle.

Tensors go to ``training_state.safetensors`` and everything else to ``training_state.json``
next to the model checkpoint, so loading a run never unpickles arbitrary objects.
"""

import json
import os
from pathlib import Path

import torch

STATE_TENSORS = 'training_state.safetensors'
STATE_JSON = 'training_state.json'
STATE_VERSION = 1


def _split_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for index, values in state_dict['state'].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f'optimizer.{index}.{key}'] = value.detach().to('cpu').contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = []
    for group in state_dict['param_groups']:
        group = dict(group)
        for key, value in group.items():
            if isinstance(value, tuple):
                group[key] = list(value)
        groups.append(group)
    return tensors, {'param_groups': groups, 'scalars': scalars}


def _join_optimizer(tensors: dict, document: dict) -> dict:
    state = {}
    for name, value in tensors.items():
        if not name.startswith('optimizer.'):
            continue
        _, index, key = name.split('.', 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in document['scalars'].items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in document['param_groups']:
        group = dict(group)
        if 'betas' in group:
            group['betas'] = tuple(group['betas'])
        groups.append(group)
    return {'state': state, 'param_groups': groups}


def save_training_state(directory, optimizer: torch.optim.Optimizer, scheduler, step: int,
                        extra: dict | None = None) -> None:
    """Write the optimiser, scheduler, step and RNG state of a run into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, optimizer_document = _split_optimizer(optimizer.state_dict())
    tensors['rng.torch'] = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for index, value in enumerate(cuda_states):
        tensors[f'rng.cuda.{index}'] = value
    document = {
        'version': STATE_VERSION,
        'step': int(step),
        'optimizer': optimizer_document,
        'scheduler': scheduler.state_dict(),
        'cuda_rng_devices': len(cuda_states),
        'extra': extra or {},
    }
    tmp = directory / (STATE_TENSORS + '.tmp')
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / STATE_TENSORS)
    tmp = directory / (STATE_JSON + '.tmp')
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, directory / STATE_JSON)


def load_training_state(directory, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore what :func:`save_training_state` wrote; return ``{'step': ..., 'extra': ...}``.

    Raises:
        FileNotFoundError: when ``directory`` has no training state (for example a shipped
            model directory, which holds only the weights and the config).
        ValueError: for an unknown state version.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    json_path, tensor_path = directory / STATE_JSON, directory / STATE_TENSORS
    if not json_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(
            f'{directory} has no training state ({STATE_JSON} and {STATE_TENSORS}); resume '
            'from a checkpoint written by lewm train, such as <run>/last')
    document = json.loads(json_path.read_text())
    if document.get('version') != STATE_VERSION:
        raise ValueError(f'{json_path}: unknown training state version '
                         f'{document.get("version")!r}, expected {STATE_VERSION}')
    tensors = load_file(str(tensor_path))
    optimizer.load_state_dict(_join_optimizer(tensors, document['optimizer']))
    scheduler.load_state_dict(document['scheduler'])
    torch.set_rng_state(tensors['rng.torch'])
    devices = int(document.get('cuda_rng_devices', 0))
    if devices and torch.cuda.is_available():
        states = [tensors[f'rng.cuda.{i}'] for i in range(devices)]
        torch.cuda.set_rng_state_all(states[:torch.cuda.device_count()])
    return {'step': int(document['step']), 'extra': document.get('extra', {})}
