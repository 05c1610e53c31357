"""Training clips from an HDF5 episode file, action statistics and the data fingerprint.

A clip is ``T = history + num_preds`` frames spaced ``frameskip`` steps apart, each paired with
the block of ``frameskip`` actions that follows it, so a clip starting at row ``s`` spans rows
``s .. s + T * frameskip - 1`` of one episode. Every start row whose span fits inside its
episode is a clip (stride 1). Actions are z-scored with per-joint statistics over all non-NaN
rows of the file; NaN actions (the last row of each episode) become 0 after normalisation.
"""

import hashlib
import json
import logging

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from lewm_ros.data.episodes import validate_episode_file

logger = logging.getLogger(__name__)

STATS_GROUP = 'stats'
# Smallest action standard deviation used for normalisation (radians). A joint that never moved
# in the data would otherwise turn any planned motion of it into a huge normalised value.
MIN_ACTION_STD = 1e-3
# Files with fewer pixel bytes than this are loaded into memory by default.
IN_MEMORY_BYTES = 2 * 1024**3
# HDF5 chunk cache of a dataset read from disk, per DataLoader worker.
CHUNK_CACHE_BYTES = 64 * 1024**2


def compute_action_stats(action: np.ndarray, min_std: float = MIN_ACTION_STD) -> tuple:
    """Return per-joint ``(mean, std)`` ``(A,)`` over the rows of ``action`` without NaN.

    Raises:
        ValueError: when no row is free of NaN.
    """
    action = np.asarray(action, dtype=np.float64)
    valid = action[~np.isnan(action).any(axis=1)]
    if len(valid) == 0:
        raise ValueError('no action row without NaN; episodes need at least 2 steps')
    return valid.mean(axis=0), np.maximum(valid.std(axis=0), min_std)


def action_stats(path, recompute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return the action ``(mean, std)`` of an episode file, stored in its ``stats`` group.

    The statistics are computed on first use and written to the file so that training and
    every later reader use the same numbers. They are recomputed when the row count or the
    data fingerprint changed, or with ``recompute``. A read-only file gets them computed in
    memory on every call.
    """
    fingerprint = data_fingerprint(path)
    with h5py.File(path, 'r') as file:
        group = file.get(STATS_GROUP)
        if (group is not None and not recompute
                and group.attrs.get('fingerprint') == fingerprint):
            return group['action_mean'][()], group['action_std'][()]
        mean, std = compute_action_stats(file['action'][()])
    try:
        with h5py.File(path, 'a') as file:
            if STATS_GROUP in file:
                del file[STATS_GROUP]
            group = file.create_group(STATS_GROUP)
            group.create_dataset('action_mean', data=mean)
            group.create_dataset('action_std', data=std)
            group.attrs['fingerprint'] = fingerprint
            group.attrs['min_std'] = MIN_ACTION_STD
    except OSError as error:
        logger.warning('could not store action statistics in %s (%s); they are recomputed '
                       'on every load', path, error)
    return mean, std


def data_fingerprint(path, sample_rows: int = 64) -> str:
    """Return a sha256 hex digest that identifies the data of an episode file.

    It covers the episode lengths, the shape and dtype of every dataset, the file attributes
    and ``sample_rows`` evenly spaced rows of ``action``, ``proprio`` and ``pixels``. The
    ``stats`` group is left out, so storing statistics does not change the fingerprint.
    """
    digest = hashlib.sha256()
    with h5py.File(path, 'r') as file:
        digest.update(np.ascontiguousarray(file['ep_len'][()], dtype=np.int64).tobytes())
        for name in sorted(file.keys()):
            if isinstance(file[name], h5py.Dataset):
                digest.update(f'{name}:{file[name].shape}:{file[name].dtype};'.encode())
        attrs = {key: _json_value(value) for key, value in sorted(file.attrs.items())}
        digest.update(json.dumps(attrs, sort_keys=True).encode())
        total = file['action'].shape[0]
        rows = np.unique(np.linspace(0, max(total - 1, 0), min(sample_rows, total)).astype(int))
        for name in ('action', 'proprio', 'pixels'):
            if len(rows):
                digest.update(np.ascontiguousarray(file[name][rows]).tobytes())
    return digest.hexdigest()


def _json_value(value):
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def clip_starts(ep_len, ep_offset, span: int) -> np.ndarray:
    """Return the global start rows of all clips of ``span`` rows inside single episodes."""
    starts = [offset + np.arange(length - span + 1)
              for length, offset in zip(ep_len, ep_offset) if length >= span]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, dtype=np.int64)


class ClipDataset(Dataset):
    """Clips of an HDF5 episode file for training a world model.

    Args:
        path: the episode file.
        history: context frames per clip.
        num_preds: predicted frames per clip.
        frameskip: environment steps between two frames of a clip; also the length of an
            action block.
        in_memory: load pixels into RAM; None does so when they take less than 2 GiB.
        episodes: restrict clips to these episode indices (e.g. a train/validation split).

    Each item is a dict of tensors, with ``T = history + num_preds`` and ``A`` joints:

    - ``pixels``: ``uint8 (T, H, W, 3)``
    - ``action``: ``float32 (T, frameskip * A)``, normalised action blocks, NaN replaced by 0
    - ``proprio``: ``float32 (T, 2A)``, joint positions and velocities at each frame
    - ``index``: ``int64 ()``, the global start row of the clip
    """

    def __init__(self, path, history: int = 3, num_preds: int = 1, frameskip: int = 5,
                 in_memory: bool | None = None, episodes=None) -> None:
        if history < 1 or num_preds < 0 or frameskip < 1:
            raise ValueError(f'need history >= 1, num_preds >= 0, frameskip >= 1, got '
                             f'{history}, {num_preds}, {frameskip}')
        self.path = str(path)
        self.attrs = validate_episode_file(self.path)
        self.history, self.num_preds, self.frameskip = history, num_preds, frameskip
        self.num_frames = history + num_preds
        self.span = self.num_frames * frameskip

        with h5py.File(self.path, 'r') as file:
            self.ep_len = file['ep_len'][()]
            self.ep_offset = file['ep_offset'][()]
            self.action = file['action'][()].astype(np.float32)
            self.proprio = file['proprio'][()].astype(np.float32)
            pixels = file['pixels']
            self.frame_shape = pixels.shape[1:]
            if in_memory is None:
                in_memory = pixels.size * pixels.dtype.itemsize < IN_MEMORY_BYTES
            self.pixels = pixels[()] if in_memory else None
        self.in_memory = in_memory
        self._file = None

        self.action_mean, self.action_std = action_stats(self.path)
        self.fingerprint = data_fingerprint(self.path)
        normalised = (self.action - self.action_mean) / self.action_std
        self.action_normalised = np.nan_to_num(normalised, nan=0.0).astype(np.float32)

        lengths, offsets = self.ep_len, self.ep_offset
        if episodes is not None:
            chosen = np.asarray(episodes, dtype=int)
            lengths, offsets = lengths[chosen], offsets[chosen]
        self.starts = clip_starts(lengths, offsets, self.span)
        if len(self.starts) == 0:
            raise ValueError(
                f'{self.path}: no episode has the {self.span} steps a clip needs '
                f'((history {history} + num_preds {num_preds}) * frameskip {frameskip}); '
                'record longer episodes or lower frameskip')

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    @property
    def joint_names(self) -> list[str]:
        return list(self.attrs['joint_names'])

    def __len__(self) -> int:
        return len(self.starts)

    def _pixels(self, start: int) -> np.ndarray:
        if self.pixels is not None:
            return self.pixels[start:start + self.span:self.frameskip]
        if self._file is None:
            # Opened lazily in each DataLoader worker: an h5py handle must not cross fork().
            self._file = h5py.File(self.path, 'r', rdcc_nbytes=CHUNK_CACHE_BYTES,
                                   rdcc_nslots=100_003)
        # One contiguous read touches the fewest compressed chunks; subsample afterwards.
        span_end = start + (self.num_frames - 1) * self.frameskip + 1
        return self._file['pixels'][start:span_end][::self.frameskip]

    def __getitem__(self, index: int) -> dict:
        start = int(self.starts[index])
        frame_rows = start + self.frameskip * np.arange(self.num_frames)
        blocks = self.action_normalised[start:start + self.span]
        return {
            'pixels': torch.from_numpy(np.ascontiguousarray(self._pixels(start))),
            'action': torch.from_numpy(blocks.reshape(self.num_frames, -1)),
            'proprio': torch.from_numpy(self.proprio[frame_rows]),
            'index': torch.tensor(start, dtype=torch.int64),
        }

    def normalise_actions(self, action) -> np.ndarray:
        """Z-score raw joint deltas ``(..., A)`` with this dataset's statistics."""
        return (np.asarray(action) - self.action_mean) / self.action_std

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_file'] = None
        return state
