"""Tests of lewm_ros.imaging: every encoding, row padding, byte order and malformed input."""

import numpy as np
import pytest

from lewm_ros.imaging import array_to_image, ENCODINGS, image_to_array, image_to_rgb, ImageFields

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _colour_source(encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (array in the encoding's channel order, expected RGB uint8) for colour encodings."""
    dtype, channels, order = ENCODINGS[encoding]
    alpha = RNG.integers(0, 256, size=RGB.shape[:2] + (1,), dtype=np.uint8)
    channels_rgb = np.concatenate([RGB, alpha], axis=2)[:, :, :channels]
    if order.startswith('bgr'):
        channels_rgb = channels_rgb[:, :, [2, 1, 0, 3][:channels]]
    if dtype == np.uint16:
        # 257 * v maps 0..255 onto 0..65535 exactly, so scaling back is exact.
        return channels_rgb.astype(np.uint16) * 257, RGB
    return channels_rgb, RGB


COLOUR = [name for name, (_, channels, _) in ENCODINGS.items() if channels > 1]


@pytest.mark.parametrize('encoding', COLOUR)
@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('padding', [0, 3])
def test_colour_encodings_decode_to_rgb(encoding, bigendian, padding):
    source, expected = _colour_source(encoding)
    row = source.shape[1] * source.shape[2] * source.dtype.itemsize
    fields = array_to_image(source, encoding, step=row + padding, is_bigendian=bigendian)
    assert fields.step == row + padding
    assert len(fields.data) == fields.height * fields.step
    rgb = image_to_rgb(fields)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_array_equal(image_to_array(fields), source)


def test_bgr8_is_channel_swapped_rgb8():
    bgr = array_to_image(RGB[:, :, ::-1], 'bgr8')
    np.testing.assert_array_equal(image_to_rgb(bgr), RGB)
    rgb = array_to_image(RGB, 'rgb8')
    np.testing.assert_array_equal(image_to_rgb(rgb), RGB)


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono8_is_grey(encoding):
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    rgb = image_to_rgb(array_to_image(grey, encoding, step=8))
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_scales_full_range(encoding, bigendian):
    values = np.array([[0, 257, 65535], [128 * 257, 1000, 65534]], dtype=np.uint16)
    fields = array_to_image(values, encoding, step=7, is_bigendian=bigendian)
    np.testing.assert_array_equal(image_to_array(fields), values)
    rgb = image_to_rgb(fields)
    expected = np.round(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[:, :, 0], expected)
    assert rgb[0, 2, 1] == 255
    assert rgb[0, 1, 2] == 1


def test_big_endian_bytes_are_read_as_big_endian():
    # 0x0102 written big-endian is the bytes 01 02.
    fields = ImageFields(height=1, width=1, encoding='16UC1', is_bigendian=1, step=2,
                         data=bytes([1, 2]))
    assert image_to_array(fields)[0, 0] == 0x0102
    fields.is_bigendian = 0
    assert image_to_array(fields)[0, 0] == 0x0201


@pytest.mark.parametrize('bigendian', [False, True])
def test_float_depth_min_max_scaling(bigendian):
    depth = np.array([[0.5, 1.0, np.nan], [1.5, np.inf, 2.5]], dtype=np.float32)
    fields = array_to_image(depth, '32FC1', step=4 * 3 + 4, is_bigendian=bigendian)
    raw = image_to_array(fields)
    np.testing.assert_array_equal(raw, depth)
    rgb = image_to_rgb(fields)
    # Finite range 0.5..2.5 maps to 0..255; NaN and inf are black.
    expected = np.array([[0, 64, 0], [128, 0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(rgb[:, :, 0], expected)
    np.testing.assert_array_equal(rgb[:, :, 2], expected)


def test_float_depth_fixed_range_clips():
    depth = np.array([[-1.0, 0.0, 1.0, 2.0, 4.0]], dtype=np.float32)
    rgb = image_to_rgb(array_to_image(depth, '32FC1'), value_range=(0.0, 2.0))
    np.testing.assert_array_equal(rgb[0, :, 1], [0, 0, 128, 255, 255])


def test_constant_and_empty_depth_are_black():
    constant = image_to_rgb(array_to_image(np.full((2, 2), 3.0, np.float32), '32FC1'))
    assert not constant.any()
    missing = image_to_rgb(array_to_image(np.full((2, 2), np.nan, np.float32), '32FC1'))
    assert not missing.any()


@pytest.mark.parametrize('encoding', ['64FC1', '16SC1', '32SC1'])
def test_other_single_channel_types(encoding):
    values = np.array([[-10, 0, 10]], dtype=ENCODINGS[encoding][0])
    fields = array_to_image(values, encoding, is_bigendian=True)
    np.testing.assert_array_equal(image_to_array(fields), values)
    np.testing.assert_array_equal(image_to_rgb(fields)[0, :, 0], [0, 128, 255])


def test_ros_message_round_trip():
    from sensor_msgs.msg import Image

    msg = array_to_image(RGB, 'rgb8', step=RGB.shape[1] * 3 + 5).copy_to(Image())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    msg = array_to_image(np.arange(6, dtype=np.float32).reshape(2, 3), '32FC1').copy_to(Image())
    np.testing.assert_array_equal(image_to_array(msg), np.arange(6).reshape(2, 3))


def test_unknown_encoding_is_named():
    fields = ImageFields(height=1, width=1, encoding='yuv422_yuy2', is_bigendian=0, step=2,
                         data=b'\0\0')
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422_yuy2'"):
        image_to_rgb(fields)


def test_short_data_is_rejected():
    fields = array_to_image(RGB, 'rgb8')
    fields.data = fields.data[:-1]
    with pytest.raises(ValueError, match=r'rgb8 image 7x5 with step 21 needs 105 bytes.*104'):
        image_to_rgb(fields)


def test_long_data_is_rejected():
    fields = array_to_image(RGB, 'rgb8')
    fields.data = fields.data + b'\0'
    with pytest.raises(ValueError, match='needs 105 bytes of data, got 106'):
        image_to_array(fields)


def test_small_step_is_rejected():
    fields = array_to_image(RGB, 'rgb8')
    fields.step = 20
    with pytest.raises(ValueError, match='rgb8 image of width 7 needs step >= 21'):
        image_to_rgb(fields)


def test_encoder_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"encoding 'rgba8' needs an array of shape"):
        array_to_image(RGB, 'rgba8')
    with pytest.raises(ValueError, match='step 10 is smaller than one row of 21 bytes'):
        array_to_image(RGB, 'rgb8', step=10)


def test_invalid_value_range():
    fields = array_to_image(np.zeros((1, 2), np.float32), '32FC1')
    with pytest.raises(ValueError, match='value_range must satisfy low < high'):
        image_to_rgb(fields, value_range=(1.0, 1.0))


def test_matches_cv_bridge():
    cv_bridge = pytest.importorskip(
        'cv_bridge', reason='cv_bridge is not on PyPI; it comes only with a ROS install')
    from sensor_msgs.msg import Image

    bridge = cv_bridge.CvBridge()
    for encoding in ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16'):
        source, _ = _colour_source(encoding) if encoding in COLOUR else (
            RNG.integers(0, 255, size=(5, 7), dtype=ENCODINGS[encoding][0]), None)
        msg = array_to_image(source, encoding, step=source.shape[1] * source.itemsize
                             * (source.shape[2] if source.ndim == 3 else 1) + 2).copy_to(Image())
        np.testing.assert_array_equal(image_to_array(msg), bridge.imgmsg_to_cv2(msg))
        if encoding in COLOUR:
            np.testing.assert_array_equal(image_to_rgb(msg), bridge.imgmsg_to_cv2(msg, 'rgb8'))
