"""The demo's GIF: camera view left, goal right, each under a labelled header."""

import imageio.v2 as imageio
import numpy as np

from lewm_ros.demo import GIF_FRAME_EVERY, GIF_SCALE, write_gif


def solid(size: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (size, size, 3)).copy()


def test_gif_camera_goal_and_header(tmp_path):
    size = 16
    red, blue = solid(size, (220, 20, 20)), solid(size, (20, 20, 220))
    frames = [(0.1 * i, red) for i in range(4 * GIF_FRAME_EVERY)]
    goals = [(0.1 * 2 * GIF_FRAME_EVERY, blue)]  # arrives at the third kept frame
    path = tmp_path / 'demo.gif'

    count = write_gif(frames, goals, path, period=0.2)

    images = [np.asarray(image)[..., :3] for image in imageio.mimread(path)]
    assert count == 4
    assert len(images) == 4
    side = size * GIF_SCALE
    header = images[0].shape[0] - side
    assert header > 0
    assert images[0].shape[1] > 2 * side
    # Labels are drawn in black on the white header.
    assert images[0][:header].min() < 100
    assert np.median(images[0][:header]) > 240
    camera = images[0][header:, :side].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(camera, (220, 20, 20), atol=12)
    goal_before = images[1][header:, -side:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(goal_before, (0, 0, 0), atol=12)
    goal_after = images[2][header:, -side:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(goal_after, (20, 20, 220), atol=12)


def test_gif_resizes_other_goal_sizes(tmp_path):
    frames = [(0.0, solid(16, (200, 200, 200))), (0.1, solid(16, (200, 200, 200)))]
    goals = [(0.0, solid(8, (20, 200, 20)))]
    path = tmp_path / 'demo.gif'

    assert write_gif(frames, goals, path, period=0.2) == 1

    image = np.asarray(imageio.mimread(path)[0])[..., :3]
    side = 16 * GIF_SCALE
    np.testing.assert_allclose(image[-side:, -side:].reshape(-1, 3).mean(0), (20, 200, 20),
                               atol=12)


def test_gif_without_frames_writes_nothing(tmp_path):
    path = tmp_path / 'demo.gif'

    assert write_gif([], [], path, period=0.2) == 0
    assert not path.exists()
