"""Convert between ``sensor_msgs/Image`` fields and NumPy arrays without ROS or cv_bridge.

A message is anything with the attributes ``height``, ``width``, ``encoding``,
``is_bigendian``, ``step`` and ``data`` (a ``sensor_msgs.msg.Image`` or an
:class:`ImageFields`). Rows may be padded (``step`` larger than ``width * pixel size``) and
multi-byte pixels may be big-endian; both are handled.

Colour conversion to RGB ``uint8`` follows cv_bridge where it defines a rule:

- ``rgb8``/``bgr8``/``rgba8``/``bgra8`` and their 16-bit forms: channels reordered, alpha
  dropped. 16-bit channels are scaled to 8 bits by ``round(v / 257)`` (65535 maps to 255).
- ``8UC3``/``16UC3`` carry no colour order; like cv_bridge they are read as BGR, and
  ``8UC4``/``16UC4`` as BGRA.
- Single-channel unsigned integers (``mono8``, ``8UC1``, ``mono16``, ``16UC1``) are grey,
  scaled over the full range of the type (``16UC1`` depth in millimetres is therefore dark
  unless ``value_range`` is given).
- Single-channel floats and signed integers (``32FC1``, ``64FC1``, ``16SC1``, ``32SC1``) are
  grey, scaled linearly so that ``value_range = (low, high)`` maps to 0..255 (values outside are
  clipped). Without ``value_range`` each frame uses the minimum and maximum of its finite
  values; a constant frame is black. NaN and infinite values (missing depth) are black.
"""

from dataclasses import dataclass

import numpy as np

# encoding -> (dtype of one channel, number of channels, channel order for colour images).
# The order names the source channels; 'grey' marks single-channel images.
ENCODINGS = {
    'rgb8': (np.uint8, 3, 'rgb'),
    'bgr8': (np.uint8, 3, 'bgr'),
    'rgba8': (np.uint8, 4, 'rgba'),
    'bgra8': (np.uint8, 4, 'bgra'),
    'rgb16': (np.uint16, 3, 'rgb'),
    'bgr16': (np.uint16, 3, 'bgr'),
    'rgba16': (np.uint16, 4, 'rgba'),
    'bgra16': (np.uint16, 4, 'bgra'),
    'mono8': (np.uint8, 1, 'grey'),
    'mono16': (np.uint16, 1, 'grey'),
    '8UC1': (np.uint8, 1, 'grey'),
    '8UC3': (np.uint8, 3, 'bgr'),
    '8UC4': (np.uint8, 4, 'bgra'),
    '16UC1': (np.uint16, 1, 'grey'),
    '16UC3': (np.uint16, 3, 'bgr'),
    '16UC4': (np.uint16, 4, 'bgra'),
    '16SC1': (np.int16, 1, 'grey'),
    '32SC1': (np.int32, 1, 'grey'),
    '32FC1': (np.float32, 1, 'grey'),
    '64FC1': (np.float64, 1, 'grey'),
}


@dataclass
class ImageFields:
    """The data fields of a ``sensor_msgs/Image`` (header excluded)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes

    def copy_to(self, msg):
        """Set these fields on ``msg`` (e.g. a ``sensor_msgs.msg.Image``) and return it."""
        msg.height = self.height
        msg.width = self.width
        msg.encoding = self.encoding
        msg.is_bigendian = self.is_bigendian
        msg.step = self.step
        msg.data = self.data
        return msg


def _layout(encoding: str):
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ValueError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        ) from None


def image_to_array(msg) -> np.ndarray:
    """Return the pixels of an image message in their own type, without colour conversion.

    Returns:
        A new array of shape ``(H, W)`` for single-channel encodings or ``(H, W, C)`` otherwise,
        with the encoding's dtype in native byte order.

    Raises:
        ValueError: for an unknown encoding, or when ``step`` or the data size does not fit
            ``height``, ``width`` and the encoding.
    """
    dtype, channels, _ = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if height < 0 or width < 0:
        raise ValueError(f'image size {width}x{height} is invalid ({msg.encoding})')
    if step < row_bytes:
        raise ValueError(
            f'{msg.encoding} image of width {width} needs step >= {row_bytes} bytes, '
            f'got step {step}')
    try:
        # bytes, bytearray and the array.array that rclpy uses for uint8[] fields.
        buffer = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError):
        buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buffer.size != height * step:
        raise ValueError(
            f'{msg.encoding} image {width}x{height} with step {step} needs '
            f'{height * step} bytes of data, got {buffer.size}')

    # Drop the row padding on the byte level, then reinterpret the bytes with the message's
    # byte order and convert to native order.
    rows = buffer.reshape(height, step)[:, :row_bytes]
    order = '>' if msg.is_bigendian else '<'
    typed = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    pixels = typed.astype(dtype, copy=True).reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def _to_uint8(values: np.ndarray, value_range) -> np.ndarray:
    """Scale grey values to ``uint8`` as described in the module docstring."""
    if values.dtype == np.uint8 and value_range is None:
        return values
    if values.dtype == np.uint16 and value_range is None:
        return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)

    values = values.astype(np.float64)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f'value_range must satisfy low < high, got {value_range}')
    elif all_finite:
        low, high = float(values.min()), float(values.max())
    elif finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
    else:
        low, high = 0.0, 0.0
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    if not all_finite:
        scaled[~finite] = 0.0
    return np.rint(np.clip(scaled, 0.0, 255.0, out=scaled), out=scaled).astype(np.uint8)


def image_to_rgb(msg, value_range=None) -> np.ndarray:
    """Decode an image message into an RGB ``uint8`` array of shape ``(H, W, 3)``.

    Args:
        msg: object with the ``sensor_msgs/Image`` fields.
        value_range: ``(low, high)`` mapped to black and white for single-channel float and
            signed images (and for unsigned ones, replacing full-range scaling). ``None`` scales
            float and signed frames by their own finite minimum and maximum.

    Raises:
        ValueError: as :func:`image_to_array`.
    """
    pixels = image_to_array(msg)
    _, _, order = _layout(msg.encoding)
    if order == 'grey':
        grey = _to_uint8(pixels, value_range)
        return np.repeat(grey[:, :, None], 3, axis=2)

    if pixels.dtype == np.uint16:
        pixels = np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
    rgb = pixels[:, :, :3]
    if order.startswith('bgr'):
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def array_to_image(array: np.ndarray, encoding: str = 'rgb8', step: int | None = None,
                   is_bigendian: bool = False) -> ImageFields:
    """Encode an array into ``sensor_msgs/Image`` fields (the inverse of :func:`image_to_array`).

    Args:
        array: ``(H, W)`` or ``(H, W, 1)`` for single-channel encodings, ``(H, W, C)`` otherwise,
            in any dtype that converts to the encoding's dtype without loss (values are cast).
            For colour encodings the channels must already be in the encoding's order.
        encoding: one of :data:`ENCODINGS`.
        step: bytes per row; ``None`` means no padding. Padding bytes are zero.
        is_bigendian: write multi-byte values big-endian.

    Raises:
        ValueError: for an unknown encoding, a shape that does not match it, or a step smaller
            than one row.
    """
    dtype, channels, _ = _layout(encoding)
    array = np.asarray(array)
    if array.ndim == 2 and channels == 1:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ValueError(
            f'encoding {encoding!r} needs an array of shape (H, W, {channels})'
            f'{" or (H, W)" if channels == 1 else ""}, got {array.shape}')
    height, width = array.shape[:2]
    order = '>' if is_bigendian else '<'
    row = np.ascontiguousarray(array.astype(np.dtype(dtype).newbyteorder(order)))
    row_bytes = width * channels * np.dtype(dtype).itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f'step {step} is smaller than one row of {row_bytes} bytes '
                         f'({encoding}, width {width})')
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, :row_bytes] = row.view(np.uint8).reshape(height, row_bytes)
    return ImageFields(height=height, width=width, encoding=encoding,
                       is_bigendian=int(bool(is_bigendian)), step=step, data=rows.tobytes())
