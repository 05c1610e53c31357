"""Helpers shared by the lewm_ros nodes: topic names, QoS profiles, latent messages, main()."""

import json

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from rclpy.time import Time
from sensor_msgs.msg import Image

# Default topic names. Every node takes them as parameters, so launch files can change them.
# They are relative, so a namespace moves the whole stack; /diagnostics stays absolute because
# diagnostic aggregators listen there.
CAMERA_IMAGE_TOPIC = 'camera/image_raw'
LATENT_TOPIC = 'lewm/latent'
GOAL_IMAGE_TOPIC = 'lewm/goal_image'
GOAL_LATENT_TOPIC = 'lewm/goal_latent'
MODEL_INFO_TOPIC = 'lewm/model_info'
JOINT_STATES_TOPIC = 'joint_states'
PLAN_TOPIC = 'lewm/plan'
SURPRISE_TOPIC = 'lewm/surprise'
TRAJECTORY_COMMAND_TOPIC = 'joint_trajectory_controller/joint_trajectory'
FORWARD_COMMAND_TOPIC = 'forward_position_controller/commands'
DIAGNOSTICS_TOPIC = '/diagnostics'
ROBOT_DESCRIPTION_TOPIC = 'robot_description'

LATENT_ENCODING = '32FC1'

# Camera input: best effort, so that both best-effort and reliable publishers connect.
SENSOR_QOS = qos_profile_sensor_data
# Streams between our nodes and commands to ros2_control: reliable, volatile.
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
# Latched topics (goal latent, model info, robot description): a late subscriber still gets the
# last message.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)


def latent_to_msg(latent, header=None) -> Image:
    """Pack a latent ``(D,)`` into a ``sensor_msgs/Image`` of height 1, width D, ``32FC1``.

    ``header`` (stamp and frame_id of the source image) is copied when given.
    """
    values = np.asarray(latent, dtype='<f4').reshape(-1)
    msg = Image()
    if header is not None:
        msg.header.stamp = header.stamp
        msg.header.frame_id = header.frame_id
    msg.height = 1
    msg.width = values.size
    msg.encoding = LATENT_ENCODING
    msg.is_bigendian = 0
    msg.step = 4 * values.size
    msg.data = values.tobytes()
    return msg


def msg_to_latent(msg: Image, expected_dim: int | None = None) -> np.ndarray:
    """Unpack a latent message into a ``float32`` array ``(D,)``.

    Raises:
        ValueError: when the message is not a 1-row ``32FC1`` image, its data size does not
            match, the size differs from ``expected_dim``, or it contains NaN or inf.
    """
    if msg.encoding != LATENT_ENCODING or msg.height != 1:
        raise ValueError(f'latent must be a 32FC1 image of height 1, got {msg.encoding} of '
                         f'height {msg.height}')
    if msg.step != 4 * msg.width or len(msg.data) != msg.step:
        raise ValueError(f'latent of width {msg.width} needs step {4 * msg.width} and as many '
                         f'bytes, got step {msg.step} and {len(msg.data)} bytes')
    if expected_dim is not None and msg.width != expected_dim:
        raise ValueError(f'latent has {msg.width} values, the model has latent size '
                         f'{expected_dim}; check that both nodes load the same model')
    dtype = '>f4' if msg.is_bigendian else '<f4'
    latent = np.frombuffer(bytes(msg.data), dtype=dtype).astype(np.float32)
    if not np.isfinite(latent).all():
        raise ValueError('latent contains NaN or inf')
    return latent


def parse_model_info(text: str) -> dict:
    """Parse the JSON of a model-info message; raise ValueError naming the problem."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f'model info is not valid JSON: {error}') from None
    if not isinstance(info, dict) or 'latent_dim' not in info:
        raise ValueError(f'model info must be a JSON object with latent_dim, got {text[:200]!r}')
    return info


def stamp_to_seconds(stamp) -> float:
    """Convert a ``builtin_interfaces/Time`` into seconds (float)."""
    return Time.from_msg(stamp).nanoseconds * 1e-9


def now_seconds(node) -> float:
    """Return the node's clock (ROS time, so sim time when use_sim_time is set) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def run_node(node_class, args=None) -> None:
    """Initialise rclpy, spin one ``node_class()`` and shut down cleanly on Ctrl-C or SIGTERM.

    A ValueError or FileNotFoundError raised while the node starts (an invalid parameter, a
    missing file) is logged as one fatal line and ends the process with exit status 1.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as error:
        if node is not None:
            raise
        get_logger(node_class.__module__.rsplit('.', 1)[-1]).fatal(f'start-up failed: {error}')
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def declare(node, name: str, default, description: str):
    """Declare a read-only-at-start parameter with a description and return its value."""
    descriptor = ParameterDescriptor(description=description)
    return node.declare_parameter(name, default, descriptor).value


def declare_array(node, name: str, array_type, description: str) -> list:
    """Declare an array parameter that may be left unset; return its value or ``[]``.

    ``array_type`` is e.g. ``Parameter.Type.STRING_ARRAY``. rclpy cannot infer a type from an
    empty default list, so the parameter is declared by type without a value.
    """
    descriptor = ParameterDescriptor(description=description)
    value = node.declare_parameter(name, array_type, descriptor).value
    return list(value) if value is not None else []
