"""Tests of the HDF5 episode file, ``lewm collect`` and the clip dataset."""

import argparse
import os

import h5py
import numpy as np
import pytest
import torch

os.environ.setdefault('MUJOCO_GL', 'egl')

from lewm_ros.data import collect  # noqa: E402
from lewm_ros.data.clips import (  # noqa: E402
    action_stats, clip_starts, ClipDataset, compute_action_stats, data_fingerprint,
    MIN_ACTION_STD)
from lewm_ros.data.episodes import (  # noqa: E402
    EpisodeWriter, read_episodes, read_metadata, validate_episode_file)

JOINTS = ['j1', 'j2']


def lewm_collect(argv):
    """Run ``lewm collect`` with ``argv`` through its own argument parser."""
    parser = argparse.ArgumentParser()
    collect.add_arguments(parser)
    return collect.run(parser.parse_args(argv))


def _synthetic_episode(length, start, size=8):
    """Build an episode whose values encode their global row, so clips can be traced back."""
    rows = np.arange(start, start + length)
    pixels = np.zeros((length, size, size, 3), dtype=np.uint8)
    pixels[:, 0, 0, 0] = rows % 256
    pixels[:, 0, 0, 1] = rows // 256
    action = np.stack([rows * 0.01, -rows * 0.02], axis=1).astype(np.float64)
    action[-1] = np.nan
    proprio = np.stack([rows, rows, rows * 0.5, rows * 0.5], axis=1).astype(np.float64)
    return {'pixels': pixels, 'action': action, 'proprio': proprio,
            'q_cmd': np.cumsum(np.nan_to_num(action), axis=0)}


def _write_synthetic(path, lengths, size=8):
    attrs = {'control_period': 0.1, 'camera': 'test_camera', 'seed': 7, 'source': 'test',
             'policy': 'synthetic'}
    episodes = []
    with EpisodeWriter(path, size, JOINTS, attrs, {'q_cmd': 2}) as writer:
        start = 0
        for length in lengths:
            episode = _synthetic_episode(length, start, size)
            writer.add_episode(**episode)
            episodes.append(episode)
            start += length
    return episodes


def test_episode_file_round_trip(tmp_path):
    path = tmp_path / 'episodes.h5'
    episodes = _write_synthetic(path, [5, 9, 3])
    arrays, attrs = read_episodes(path)
    np.testing.assert_array_equal(arrays['ep_len'], [5, 9, 3])
    np.testing.assert_array_equal(arrays['ep_offset'], [0, 5, 14])
    for name in ('pixels', 'action', 'proprio', 'q_cmd'):
        expected = np.concatenate([episode[name] for episode in episodes])
        np.testing.assert_array_equal(arrays[name], expected.astype(arrays[name].dtype))
    assert arrays['pixels'].dtype == np.uint8
    assert arrays['action'].dtype == np.float32
    assert attrs['joint_names'] == JOINTS
    assert attrs['control_period'] == 0.1
    assert attrs['seed'] == 7
    assert attrs['image_size'] == 8
    assert read_metadata(path)['camera'] == 'test_camera'
    assert validate_episode_file(path)['source'] == 'test'
    with h5py.File(path, 'r') as file:
        assert file['pixels'].compression == 'gzip'
        assert file['pixels'].chunks[1:] == (8, 8, 3)


def test_episode_writer_rejects_bad_input(tmp_path):
    path = tmp_path / 'bad.h5'
    attrs = {'control_period': 0.1, 'camera': 'c', 'seed': 0, 'source': 'test'}
    with EpisodeWriter(path, 8, JOINTS, attrs) as writer:
        episode = _synthetic_episode(4, 0)
        with pytest.raises(ValueError, match='pixels must be uint8'):
            writer.add_episode(pixels=episode['pixels'][:, :4], action=episode['action'],
                               proprio=episode['proprio'])
        with pytest.raises(ValueError, match='missing'):
            writer.add_episode(pixels=episode['pixels'], action=episode['action'])
    with pytest.raises(FileExistsError, match='overwrite'):
        EpisodeWriter(path, 8, JOINTS, attrs)
    incomplete = {'control_period': 0.1, 'camera': 'c', 'seed': 0}
    with pytest.raises(ValueError, match='source'):
        EpisodeWriter(tmp_path / 'other.h5', 8, JOINTS, incomplete)


def test_clip_starts_stay_in_episodes():
    starts = clip_starts(np.array([5, 12, 7, 3]), np.array([0, 5, 17, 24]), span=6)
    np.testing.assert_array_equal(starts, [5, 6, 7, 8, 9, 10, 11, 17, 18])


def test_clips_never_cross_episodes(tmp_path):
    path = tmp_path / 'clips.h5'
    lengths = [20, 7, 33, 16, 15]
    _write_synthetic(path, lengths)
    dataset = ClipDataset(path, history=3, num_preds=1, frameskip=4)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # Span 16 rows: episode lengths 20, 33, 16 give 5 + 18 + 1 clips; 7 and 15 give none.
    assert len(dataset) == 24
    episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
    raw_action = np.concatenate([_synthetic_episode(n, o)['action']
                                 for n, o in zip(lengths, offsets)])
    for index in range(len(dataset)):
        item = dataset[index]
        start = int(item['index'])
        rows = (item['pixels'][:, 0, 0, 0].long() + 256 * item['pixels'][:, 0, 0, 1].long())
        np.testing.assert_array_equal(rows.numpy(), start + 4 * np.arange(4))
        assert len(set(episode_of_row[start:start + 16])) == 1
        np.testing.assert_allclose(item['proprio'][:, 0].numpy(), rows.numpy())
        assert item['action'].shape == (4, 8)
        assert torch.isfinite(item['action']).all()
        # Block k holds actions start + 4k .. start + 4k + 3, joints interleaved per step.
        block = item['action'][1].numpy().reshape(4, 2)
        expected = dataset.normalise_actions(raw_action[start + 4:start + 8])
        np.testing.assert_allclose(block, np.nan_to_num(expected), rtol=1e-5, atol=1e-5)


def test_clip_nan_actions_become_zero(tmp_path):
    path = tmp_path / 'nan.h5'
    _write_synthetic(path, [8])
    dataset = ClipDataset(path, history=1, num_preds=1, frameskip=4)
    assert len(dataset) == 1
    action = dataset[0]['action'].numpy().reshape(8, 2)
    # Row 7 is the last of the episode: its NaN action is 0 after normalisation.
    np.testing.assert_array_equal(action[7], [0, 0])
    assert np.all(action[:7] != 0)


def test_action_stats_stored_and_reused(tmp_path):
    path = tmp_path / 'stats.h5'
    _write_synthetic(path, [6, 6])
    arrays, _ = read_episodes(path, ['action'])
    valid = arrays['action'][~np.isnan(arrays['action']).any(axis=1)].astype(np.float64)
    mean, std = action_stats(path)
    np.testing.assert_allclose(mean, valid.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, valid.std(axis=0), rtol=1e-6)
    with h5py.File(path, 'r') as file:
        np.testing.assert_array_equal(file['stats/action_mean'][()], mean)
    # A stored value is reused as long as the data fingerprint is unchanged.
    with h5py.File(path, 'a') as file:
        file['stats/action_mean'][0] = 123.0
    assert action_stats(path)[0][0] == 123.0
    assert action_stats(path, recompute=True)[0][0] == pytest.approx(mean[0])


def test_action_std_floor():
    action = np.array([[0.1, 0.0], [0.3, 0.0], [np.nan, np.nan]])
    mean, std = compute_action_stats(action)
    np.testing.assert_allclose(mean, [0.2, 0.0])
    np.testing.assert_allclose(std, [0.1, MIN_ACTION_STD])
    with pytest.raises(ValueError, match='no action row'):
        compute_action_stats(np.full((3, 2), np.nan))


def test_fingerprint_tracks_data(tmp_path):
    first, second = tmp_path / 'a.h5', tmp_path / 'b.h5'
    _write_synthetic(first, [6, 6])
    _write_synthetic(second, [6, 6])
    assert data_fingerprint(first) == data_fingerprint(second)
    action_stats(first)
    assert data_fingerprint(first) == data_fingerprint(second)
    with h5py.File(second, 'a') as file:
        file['action'][0, 0] = 5.0
    assert data_fingerprint(first) != data_fingerprint(second)
    with h5py.File(first, 'a') as file:
        file.attrs['control_period'] = 0.05
    assert data_fingerprint(first) != data_fingerprint(second)


def test_clip_dataset_from_disk_matches_memory(tmp_path):
    path = tmp_path / 'disk.h5'
    _write_synthetic(path, [25, 25])
    in_memory = ClipDataset(path, history=2, num_preds=1, frameskip=3, in_memory=True)
    on_disk = ClipDataset(path, history=2, num_preds=1, frameskip=3, in_memory=False)
    assert on_disk.pixels is None
    assert len(in_memory) == len(on_disk) == 2 * (25 - 9 + 1)
    for index in (0, 7, len(on_disk) - 1):
        for key in ('pixels', 'action', 'proprio'):
            torch.testing.assert_close(in_memory[index][key], on_disk[index][key])
    only_second = ClipDataset(path, history=2, num_preds=1, frameskip=3, episodes=[1])
    assert int(only_second.starts.min()) == 25


def test_collect_cli_writes_episodes(tmp_path):
    output, sheet = tmp_path / 'sim.h5', tmp_path / 'sheet.png'
    code = lewm_collect([str(output), '--episodes', '3', '--steps', '12', '--seed', '4',
                         '--contact-sheet', str(sheet)])
    assert code == 0
    arrays, attrs = read_episodes(output)
    np.testing.assert_array_equal(arrays['ep_len'], [12, 12, 12])
    assert arrays['pixels'].shape == (36, 64, 64, 3)
    assert arrays['proprio'].shape == (36, 6)
    assert arrays['ee_pos'].shape == (36, 3)
    assert attrs['policy'] == 'waypoint'
    assert attrs['source'] == 'sim'
    assert attrs['joint_names'] == ['base_yaw', 'shoulder_pitch', 'elbow_pitch']
    assert attrs['seed'] == 4
    assert attrs['camera'] == 'scene_camera'
    assert sheet.stat().st_size > 1000

    action, q_cmd, proprio = arrays['action'], arrays['q_cmd'], arrays['proprio']
    limits = np.array(attrs['joint_limits']).reshape(3, 2)
    for offset in arrays['ep_offset']:
        episode = slice(offset, offset + 12)
        assert np.isnan(action[episode][-1]).all()
        assert np.isnan(q_cmd[episode][-1]).all()
        # The action convention: deltas of commanded positions, starting from the measured ones.
        previous = np.vstack([proprio[offset, :3], q_cmd[episode][:-2]])
        np.testing.assert_allclose(action[episode][:-1], q_cmd[episode][:-1] - previous,
                                   atol=1e-5)
        assert np.all(q_cmd[episode][:-1] >= limits[:, 0] - 1e-6)
        assert np.all(q_cmd[episode][:-1] <= limits[:, 1] + 1e-6)

    # Same seed, same data.
    again = tmp_path / 'again.h5'
    assert lewm_collect([str(again), '--episodes', '3', '--steps', '12', '--seed', '4']) == 0
    np.testing.assert_array_equal(read_episodes(again)[0]['pixels'], arrays['pixels'])
    assert data_fingerprint(again) == data_fingerprint(output)

    # The clip dataset reads collected data.
    dataset = ClipDataset(output, history=3, num_preds=1, frameskip=2)
    assert dataset.joint_names == attrs['joint_names']
    assert dataset[0]['action'].shape == (4, 6)
