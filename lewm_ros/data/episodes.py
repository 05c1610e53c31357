"""The HDF5 episode file: one dataset per column over all steps of all episodes.

Layout (``N`` steps in total, ``E`` episodes, ``A`` joints):

============  ========================  ===================================================
dataset       shape, dtype              content
============  ========================  ===================================================
pixels        (N, H, W, 3) uint8        RGB frame observed at the step
action        (N, A) float32            ``q_cmd[t] - q_cmd[t-1]`` (radians); NaN in the last
                                        row of each episode
proprio       (N, 2A) float32           measured joint positions, then velocities
q_cmd         (N, A) float32            commanded joint positions sent after the frame;
                                        NaN in the last row of each episode
ee_pos        (N, 3) float32            end-effector position, world frame (metres);
                                        simulator data only
ep_len        (E,) int64                steps per episode
ep_offset     (E,) int64                row of the first step of each episode
============  ========================  ===================================================

File attributes: ``control_period`` (s), ``joint_names``, ``camera``, ``image_size``,
``seed``, ``policy``, ``source`` (``sim`` or ``rosbag2:<path>``), ``format_version``.

Pixels are chunked by whole frames (at most about 256 KiB per chunk) and gzip-compressed, so a
random frame reads one small chunk.
"""

import json
import logging
from pathlib import Path

import h5py
import numpy as np

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_ATTRS = ('control_period', 'joint_names', 'camera', 'image_size', 'seed', 'source')
_PIXEL_CHUNK_BYTES = 256 * 1024


class EpisodeWriter:
    """Append episodes to a new HDF5 episode file.

    Args:
        path: output file; an existing file is an error unless ``overwrite``.
        image_size: side of the square frames (pixels).
        joint_names: the ``A`` joint names, in column order.
        attrs: file attributes; must contain ``control_period``, ``camera``, ``seed`` and
            ``source`` (see the module docstring).
        extra_columns: names and widths of float32 columns besides ``action`` and ``proprio``,
            for example ``{'q_cmd': A, 'ee_pos': 3}``.
        compression: gzip level for pixels (0 to 9), or None for uncompressed pixels.
    """

    def __init__(self, path, image_size: int, joint_names, attrs: dict,
                 extra_columns: dict | None = None, overwrite: bool = False,
                 compression: int | None = 4) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f'{self.path} exists; pass overwrite (--overwrite) to replace it')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.joint_names = [str(n) for n in joint_names]
        num_joints = len(self.joint_names)
        self.image_size = int(image_size)
        self.columns = {'action': num_joints, 'proprio': 2 * num_joints, **(extra_columns or {})}
        self._lengths = []

        self.file = h5py.File(self.path, 'w')
        frame_bytes = self.image_size * self.image_size * 3
        chunk_frames = max(1, _PIXEL_CHUNK_BYTES // frame_bytes)
        pixel_options = {}
        if compression:
            pixel_options = {'compression': 'gzip', 'compression_opts': int(compression)}
        self.file.create_dataset(
            'pixels', shape=(0, self.image_size, self.image_size, 3), dtype=np.uint8,
            maxshape=(None, self.image_size, self.image_size, 3),
            chunks=(chunk_frames, self.image_size, self.image_size, 3), **pixel_options)
        for name, width in self.columns.items():
            self.file.create_dataset(name, shape=(0, width), maxshape=(None, width),
                                     dtype=np.float32, chunks=(1024, width))

        all_attrs = {'format_version': FORMAT_VERSION, 'image_size': self.image_size,
                     'joint_names': self.joint_names, 'policy': '', **attrs}
        missing = [key for key in REQUIRED_ATTRS if key not in all_attrs]
        if missing:
            self.file.close()
            raise ValueError(f'episode file attributes {missing} are missing')
        for key, value in all_attrs.items():
            self.file.attrs[key] = _attr_value(value)

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_steps(self) -> int:
        return int(sum(self._lengths))

    def add_episode(self, pixels, **columns) -> None:
        """Append one episode.

        Args:
            pixels: ``uint8 (T, H, W, 3)`` frames.
            **columns: one ``(T, width)`` array per column given at construction.

        Raises:
            ValueError: for a missing column or a shape that does not match.
        """
        pixels = np.asarray(pixels)
        length = len(pixels)
        expected = (length, self.image_size, self.image_size, 3)
        if pixels.shape != expected or pixels.dtype != np.uint8:
            raise ValueError(f'pixels must be uint8 {expected}, got {pixels.dtype} {pixels.shape}')
        if length == 0:
            raise ValueError('an episode needs at least one step')
        missing = set(self.columns) - set(columns)
        unknown = set(columns) - set(self.columns)
        if missing or unknown:
            raise ValueError(f'episode columns missing: {sorted(missing)}, '
                             f'unknown: {sorted(unknown)}')
        arrays = {}
        for name, width in self.columns.items():
            values = np.asarray(columns[name], dtype=np.float32)
            if values.shape != (length, width):
                raise ValueError(f'column {name} must have shape {(length, width)}, '
                                 f'got {values.shape}')
            arrays[name] = values

        start = self.num_steps
        for name, values in (('pixels', pixels), *arrays.items()):
            dataset = self.file[name]
            dataset.resize(start + length, axis=0)
            dataset[start:start + length] = values
        self._lengths.append(length)

    def close(self) -> None:
        """Write ``ep_len`` and ``ep_offset`` and close the file."""
        if not self.file:
            return
        lengths = np.asarray(self._lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.file.create_dataset('ep_len', data=lengths)
        self.file.create_dataset('ep_offset', data=offsets[:len(lengths)])
        self.file.close()
        logger.info('wrote %d episodes, %d steps to %s', len(lengths), lengths.sum(), self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attr_value(value):
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype())
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ''
    return value


def read_metadata(path) -> dict:
    """Return the file attributes of an episode file as plain Python values."""
    with h5py.File(path, 'r') as file:
        return _plain_attrs(file.attrs)


def _plain_attrs(attrs) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, 'item')
                     else v for v in value]
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def read_episodes(path, columns=None) -> tuple[dict, dict]:
    """Load whole columns of an episode file into memory.

    Args:
        columns: names to load; None loads every dataset.

    Returns:
        ``(arrays, attrs)``: a dict of NumPy arrays by dataset name and the file attributes.
    """
    with h5py.File(path, 'r') as file:
        names = list(file.keys()) if columns is None else list(columns)
        missing = [name for name in names if name not in file]
        if missing:
            raise KeyError(f'{path} has no datasets {missing}; it has {sorted(file.keys())}')
        arrays = {name: file[name][()] for name in names if isinstance(file[name], h5py.Dataset)}
        return arrays, _plain_attrs(file.attrs)


def validate_episode_file(path) -> dict:
    """Check the layout of an episode file and return its attributes.

    Raises:
        ValueError: when a dataset or attribute is missing or the lengths disagree.
    """
    with h5py.File(path, 'r') as file:
        for name in ('pixels', 'action', 'proprio', 'ep_len', 'ep_offset'):
            if name not in file:
                raise ValueError(f'{path} is not an episode file: dataset {name!r} is missing')
        missing = [key for key in REQUIRED_ATTRS if key not in file.attrs]
        if missing:
            raise ValueError(f'{path}: file attributes {missing} are missing')
        lengths = file['ep_len'][()]
        offsets = file['ep_offset'][()]
        total = int(lengths.sum())
        for name in ('pixels', 'action', 'proprio'):
            if file[name].shape[0] != total:
                raise ValueError(f'{path}: {name} has {file[name].shape[0]} rows, ep_len sums '
                                 f'to {total}')
        expected_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if len(lengths) and not np.array_equal(offsets, expected_offsets):
            raise ValueError(f'{path}: ep_offset does not match the cumulative ep_len')
        return _plain_attrs(file.attrs)
