"""Perception node: encode camera frames and goal images into LeWM latents.

Camera frames go into a one-frame slot. A worker thread encodes the newest frame whenever it is
free, so a slow encoder drops old frames instead of queueing them. Latents are published
as ``32FC1`` images of height 1 with the source frame's header. Topics, parameters and services
are listed in ``docs/nodes.md``.
"""

import json
import threading

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
import torch

from lewm_ros import paths
from lewm_ros.imaging import image_to_rgb
from lewm_ros.model import load_checkpoint
from lewm_ros.nodes import common


class PerceptionNode(Node):
    """Publish the latent of the newest camera frame, the goal latent and the model info."""

    def __init__(self):
        super().__init__('perception_node')
        # The worker takes frames and goal images from these slots; a new message replaces
        # one that was not taken yet.
        self._slot_lock = threading.Condition()
        self._frame = None
        self._goal = None
        self._stopping = False
        self._worker = None
        self._declare_parameters()
        if self._threads > 0:
            torch.set_num_threads(self._threads)
        self._model_path = paths.resolve(self._model_param)
        self._model = load_checkpoint(self._model_path, device=self._device)
        self._model_lock = threading.Lock()
        self.counts = {'received': 0, 'encoded': 0, 'dropped': 0, 'invalid': 0, 'stale': 0,
                       'goals': 0}

        self._latent_pub = self.create_publisher(Image, self._topic('latent_topic'),
                                                 common.RELIABLE_QOS)
        self._goal_pub = self.create_publisher(Image, self._topic('goal_latent_topic'),
                                               common.LATCHED_QOS)
        self._info_pub = self.create_publisher(String, self._topic('model_info_topic'),
                                               common.LATCHED_QOS)
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, self._topic('diagnostics_topic'), common.RELIABLE_QOS)
        self._publish_model_info()

        self._worker = threading.Thread(target=self._run_worker, name='lewm_encoder',
                                        daemon=True)
        self._worker.start()

        self.create_subscription(Image, self._topic('image_topic'), self._on_image,
                                 common.SENSOR_QOS)
        # A transient-local subscription does not connect to volatile publishers, and a
        # volatile one misses goals latched before this node started, so the node has both.
        # A latched publisher then delivers each goal twice, which only encodes it twice.
        for qos in (common.RELIABLE_QOS, common.LATCHED_QOS):
            self.create_subscription(Image, self._topic('goal_image_topic'),
                                     self._on_goal_image, qos)
        self.create_service(Trigger, '~/encode_goal_file', self._on_encode_goal_file)
        self.create_timer(self._diagnostics_period, self._publish_diagnostics)
        if self._goal_image_path:
            ok, message = self._encode_goal_file()
            log = self.get_logger().info if ok else self.get_logger().error
            log(message)

        config = self._model.config
        self.get_logger().info(
            f'perception started: model {self._model_path} ({config.preset}, latent size '
            f'{config.latent_dim}, {config.image_size} px) on {self._device}; frames from '
            f'{self._topic("image_topic")}')

    def _declare_parameters(self) -> None:
        declare = common.declare
        self._model_param = declare(self, 'model', 'models/reach_small',
                                    'checkpoint directory, absolute or relative to the share')
        self._device = declare(self, 'device', 'cpu', 'torch device, e.g. cpu or cuda:0')
        self._threads = declare(self, 'torch_threads', 0,
                                'CPU threads for torch; 0 keeps the torch default')
        self._goal_image_path = declare(self, 'goal_image_path', '',
                                        'image file encoded as the goal at start-up and by '
                                        '~/encode_goal_file; empty for none')
        self._max_age = declare(self, 'max_image_age', 0.0,
                                'frames older than this are skipped (s); 0 disables the check')
        value_range = common.declare_array(
            self, 'depth_range', Parameter.Type.DOUBLE_ARRAY,
            '[low, high] mapped to black and white for float and signed single-channel images; '
            'empty scales every frame by its own minimum and maximum')
        if value_range and len(value_range) != 2:
            raise ValueError(f'depth_range needs two values [low, high], got {value_range}')
        self._value_range = tuple(value_range) or None

        self._diagnostics_period = declare(self, 'diagnostics_period', 1.0,
                                           'time between two diagnostics messages (s)')
        topics = {
            'image_topic': common.CAMERA_IMAGE_TOPIC,
            'latent_topic': common.LATENT_TOPIC,
            'goal_image_topic': common.GOAL_IMAGE_TOPIC,
            'goal_latent_topic': common.GOAL_LATENT_TOPIC,
            'model_info_topic': common.MODEL_INFO_TOPIC,
            'diagnostics_topic': common.DIAGNOSTICS_TOPIC,
        }
        for name, default in topics.items():
            declare(self, name, default, 'topic name')

    def _topic(self, name: str) -> str:
        return self.get_parameter(name).value

    def model_info(self) -> dict:
        """Return what consumers need to check that they use the same model."""
        config = self._model.config
        return {
            'checkpoint': str(self._model_path),
            'preset': config.preset,
            'data_fingerprint': config.data_fingerprint,
            'sha256': getattr(self._model, 'checkpoint_info', {}).get('sha256'),
            'latent_dim': config.latent_dim,
            'latent_encoding': common.LATENT_ENCODING,
            'image_size': config.image_size,
            'action_dim': config.action_dim,
            'frameskip': config.frameskip,
            'history': config.history,
            'joint_names': list(config.joint_names),
            'control_period': config.control_period,
        }

    def _publish_model_info(self) -> None:
        self._info_pub.publish(String(data=json.dumps(self.model_info(), sort_keys=True)))

    # ----------------------------------------------------------------------------------------
    # Inputs

    def _on_image(self, msg: Image) -> None:
        with self._slot_lock:
            self.counts['received'] += 1
            if self._frame is not None:
                self.counts['dropped'] += 1
            self._frame = msg
            self._slot_lock.notify()

    def _on_goal_image(self, msg: Image) -> None:
        with self._slot_lock:
            self._goal = msg
            self._slot_lock.notify()

    def _on_encode_goal_file(self, request, response):
        response.success, response.message = self._encode_goal_file()
        return response

    # ----------------------------------------------------------------------------------------
    # Encoding

    def _encode(self, rgb: np.ndarray) -> np.ndarray:
        """Encode one RGB uint8 frame ``(H, W, 3)`` into a float32 latent ``(D,)``."""
        with self._model_lock, torch.inference_mode():
            latent = self._model.encode(self._model.preprocess(rgb))
        return latent[0].float().cpu().numpy()

    def _decode(self, msg: Image):
        try:
            return image_to_rgb(msg, self._value_range)
        except ValueError as error:
            self.counts['invalid'] += 1
            self.get_logger().warning(f'image rejected: {error}', throttle_duration_sec=5.0)
            return None

    def _process_frame(self, msg: Image) -> None:
        if self._max_age > 0 and (msg.header.stamp.sec or msg.header.stamp.nanosec):
            age = common.now_seconds(self) - common.stamp_to_seconds(msg.header.stamp)
            if age > self._max_age:
                self.counts['stale'] += 1
                self.get_logger().warning(
                    f'frame skipped: {age:.3f} s old, max_image_age is {self._max_age} s',
                    throttle_duration_sec=5.0)
                return
        rgb = self._decode(msg)
        if rgb is None:
            return
        latent = self._encode(rgb)
        self._latent_pub.publish(common.latent_to_msg(latent, msg.header))
        self.counts['encoded'] += 1

    def _process_goal(self, msg: Image) -> None:
        rgb = self._decode(msg)
        if rgb is not None:
            self._publish_goal(rgb, msg.header)
            self.get_logger().info(f'goal latent published from a {msg.width}x{msg.height} '
                                   f'{msg.encoding} goal image')

    def _publish_goal(self, rgb: np.ndarray, header) -> None:
        latent = self._encode(rgb)
        self._goal_pub.publish(common.latent_to_msg(latent, header))
        self.counts['goals'] += 1

    def _encode_goal_file(self) -> tuple[bool, str]:
        """Encode the image at ``goal_image_path``; return (success, message)."""
        path = self.get_parameter('goal_image_path').value
        if not path:
            return False, 'goal_image_path is empty; set it to an image file first'
        try:
            path = paths.resolve(path)
        except FileNotFoundError as error:
            return False, f'goal image not found: {error}'
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            return False, f'goal image {path} could not be read as an image'
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        self._publish_goal(np.ascontiguousarray(bgr[:, :, ::-1]), header)
        return True, f'goal latent published from {path} ({bgr.shape[1]}x{bgr.shape[0]})'

    def _run_worker(self) -> None:
        while True:
            with self._slot_lock:
                while self._frame is None and self._goal is None and not self._stopping:
                    self._slot_lock.wait()
                if self._stopping:
                    return
                goal, self._goal = self._goal, None
                frame, self._frame = self._frame, None
            try:
                if goal is not None:
                    self._process_goal(goal)
                if frame is not None:
                    self._process_frame(frame)
            except Exception as error:
                # Any failure of one frame (model, device, publisher) is logged and the worker
                # stays alive for the next frame.
                self.get_logger().error(f'encoding failed: {error!r}',
                                        throttle_duration_sec=5.0)

    # ----------------------------------------------------------------------------------------
    # Output and shutdown

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus()
        status.name = f'{self.get_name()}: encoder'
        status.hardware_id = str(self._model_path)
        status.level = DiagnosticStatus.OK
        status.message = f'{self.counts["encoded"]} frames encoded'
        if self.counts['received'] == 0:
            status.level = DiagnosticStatus.WARN
            status.message = f'no frames received on {self._topic("image_topic")}'
        status.values = [KeyValue(key=f'frames_{key}' if key != 'goals' else 'goals_encoded',
                                  value=str(value)) for key, value in self.counts.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diagnostics_pub.publish(msg)

    def destroy_node(self):
        with self._slot_lock:
            self._stopping = True
            self._slot_lock.notify()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    common.run_node(PerceptionNode, args)


if __name__ == '__main__':
    main()
