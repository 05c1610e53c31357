"""Training data from one or more HDF5 episode files, split by episode.

Several files (for example one per exploration policy) are trained on as one dataset: their
episodes are numbered in the order of the files, the validation split is drawn over all of them,
and every action block is z-scored with statistics over the actions of all files.
"""

import hashlib
import logging

import numpy as np

logger = logging.getLogger(__name__)


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list, list]:
    """Split episode indices into (train, validation), seeded, at least one training episode."""
    order = np.random.default_rng(seed).permutation(num_episodes)
    count = int(round(val_fraction * num_episodes)) if num_episodes > 1 else 0
    count = min(max(count, 1 if val_fraction > 0 and num_episodes > 1 else 0),
                num_episodes - 1)
    return sorted(order[count:].tolist()), sorted(order[:count].tolist())


class EpisodeFiles:
    """The episode files of a run: metadata, episode numbering, action statistics, fingerprint.

    Args:
        paths: HDF5 episode files with the same joints, control period and frame size.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: when the files disagree on joints, control period or frame size.
    """

    def __init__(self, paths) -> None:
        from pathlib import Path

        import h5py

        from lewm_ros.data.clips import action_stats, compute_action_stats, data_fingerprint
        from lewm_ros.data.episodes import validate_episode_file

        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError('no episode file given')
        self.attrs, self.episode_counts, frame_shapes, actions = [], [], [], []
        for path in self.paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f'episode file {path} not found; record one with '
                                        'lewm collect')
            self.attrs.append(validate_episode_file(path))
            with h5py.File(path, 'r') as file:
                self.episode_counts.append(len(file['ep_len']))
                frame_shapes.append(tuple(file['pixels'].shape[1:]))
                if len(self.paths) > 1:
                    actions.append(file['action'][()])
        first = self.attrs[0]
        for path, attrs, shape in zip(self.paths, self.attrs, frame_shapes):
            if list(attrs['joint_names']) != list(first['joint_names']):
                raise ValueError(f'{path} has joints {attrs["joint_names"]}, '
                                 f'{self.paths[0]} has {first["joint_names"]}')
            if abs(float(attrs['control_period']) - float(first['control_period'])) > 1e-9:
                raise ValueError(f'{path} has control period {attrs["control_period"]} s, '
                                 f'{self.paths[0]} has {first["control_period"]} s')
            if shape != frame_shapes[0]:
                raise ValueError(f'{path} has frames of shape {shape}, {self.paths[0]} has '
                                 f'{frame_shapes[0]}; record all files at one --image-size')
        fingerprints = [data_fingerprint(path) for path in self.paths]
        if len(self.paths) == 1:
            self.action_mean, self.action_std = action_stats(self.paths[0])
            self.fingerprint = fingerprints[0]
        else:
            self.action_mean, self.action_std = compute_action_stats(np.concatenate(actions))
            self.fingerprint = hashlib.sha256(':'.join(fingerprints).encode()).hexdigest()
        self.joint_names = [str(name) for name in first['joint_names']]
        self.control_period = float(first['control_period'])
        self.frame_shape = frame_shapes[0]

    @property
    def num_episodes(self) -> int:
        return int(sum(self.episode_counts))

    def local_episodes(self, episodes) -> list[list[int]]:
        """Map global episode indices to per-file lists of episode indices."""
        offsets = np.concatenate([[0], np.cumsum(self.episode_counts)])
        per_file = [[] for _ in self.paths]
        for episode in episodes:
            index = int(np.searchsorted(offsets, episode, side='right')) - 1
            per_file[index].append(int(episode - offsets[index]))
        return per_file

    def clips(self, episodes, history: int, frameskip: int,
              in_memory: bool | None = None) -> 'ClipSet | None':
        """Return the clips of the given global episodes, or None when they have none.

        ``in_memory`` is passed to :class:`ClipDataset`: None loads the pixels of small files
        into RAM, False reads them from the file per clip.
        """
        from lewm_ros.data.clips import ClipDataset

        datasets = []
        for path, local in zip(self.paths, self.local_episodes(episodes)):
            if not local:
                continue
            try:
                datasets.append(ClipDataset(path, history=history, num_preds=1,
                                            frameskip=frameskip, in_memory=in_memory,
                                            episodes=local))
            except ValueError as error:
                logger.warning('%s: %s', path, error)
        if not datasets:
            return None
        return ClipSet(datasets, self.action_mean, self.action_std)


class ClipSet:
    """Several ClipDatasets indexed as one, with actions z-scored by shared statistics."""

    def __init__(self, datasets, action_mean, action_std) -> None:
        self.datasets = datasets
        self.sizes = np.cumsum([len(d) for d in datasets])
        self.rescale = []
        for dataset in datasets:
            # ClipDataset z-scores with its file's statistics; map those to the shared ones.
            scale = np.asarray(dataset.action_std) / np.asarray(action_std)
            shift = (np.asarray(dataset.action_mean) - np.asarray(action_mean)) / \
                np.asarray(action_std)
            same = np.allclose(scale, 1.0) and np.allclose(shift, 0.0)
            self.rescale.append(None if same else (np.tile(scale, dataset.frameskip),
                                                   np.tile(shift, dataset.frameskip)))

    def __len__(self) -> int:
        return int(self.sizes[-1])

    def locate(self, index) -> tuple[int, int]:
        """Return (dataset number, clip index inside that dataset) of clip ``index``."""
        dataset_index = int(np.searchsorted(self.sizes, index, side='right'))
        first = int(self.sizes[dataset_index - 1]) if dataset_index else 0
        return dataset_index, int(index) - first

    def blocks(self, dataset_index: int, action):
        """Map a dataset's normalised blocks ``(T, F*A)`` to the shared statistics."""
        import torch

        if self.rescale[dataset_index] is None:
            return action
        scale, shift = self.rescale[dataset_index]
        return action * torch.from_numpy(scale).float() + torch.from_numpy(shift).float()

    def batch(self, indices):
        """Stack clips into uint8 pixels ``(B, T, H, W, 3)`` and blocks ``(B, T, F*A)``."""
        import torch

        pixels, blocks = [], []
        for index in indices:
            dataset_index, local = self.locate(index)
            item = self.datasets[dataset_index][local]
            pixels.append(item['pixels'])
            blocks.append(self.blocks(dataset_index, item['action']))
        return torch.stack(pixels), torch.stack(blocks)


class LatentClipSet:
    """The clips of a :class:`ClipSet` with every frame replaced by its latent.

    Rows and action blocks of all clips are gathered once, so a batch is two index lookups.

    Args:
        clips: the ClipSet.
        latents: per episode file path, the latents ``(rows, D)`` of all its frames (from
            :func:`encode_episode_files`).
    """

    def __init__(self, clips: ClipSet, latents: dict) -> None:
        import torch

        tables, rows, blocks = [], [], []
        offset = 0
        for dataset_index, dataset in enumerate(clips.datasets):
            table = latents[dataset.path]
            starts = dataset.starts[:, None]
            rows.append(offset + starts + dataset.frameskip * np.arange(dataset.num_frames))
            steps = dataset.action_normalised[starts + np.arange(dataset.span)]
            blocks.append(clips.blocks(dataset_index, torch.from_numpy(
                steps.reshape(len(starts), dataset.num_frames, -1))))
            tables.append(table)
            offset += len(table)
        self.latents = torch.cat(tables)
        self.rows = torch.from_numpy(np.concatenate(rows))
        self.action_blocks = torch.cat(blocks)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices):
        """Stack clips into latents ``(B, T, D)`` and blocks ``(B, T, F*A)``."""
        import torch

        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return self.latents[self.rows[index]], self.action_blocks[index]


def encode_episode_files(paths, encode, chunk: int = 1024) -> dict:
    """Encode every frame of each episode file once.

    Args:
        paths: HDF5 episode files.
        encode: callable from uint8 frames ``(B, H, W, 3)`` to latents ``(B, D)``. It is
            called without gradients.
        chunk: frames per call.

    Returns:
        ``{path: latents (rows, D)}`` on the CPU, row ``r`` being frame ``r`` of the file.
    """
    import h5py
    import torch

    tables = {}
    with torch.no_grad():
        for path in dict.fromkeys(str(p) for p in paths):
            with h5py.File(path, 'r') as file:
                pixels = file['pixels']
                parts = [encode(pixels[start:start + chunk]).float().cpu()
                         for start in range(0, len(pixels), chunk)]
            tables[path] = torch.cat(parts)
    return tables
