"""Publish or receive one sensor_msgs/Image and one sensor_msgs/JointState over DDS.

Run by test_dds_smoke.py as two separate processes:

    dds_endpoint.py publish --prefix /t --data sent.npz
    dds_endpoint.py subscribe --prefix /t --out received.npz --timeout 20

``publish`` repeats both messages every 50 ms until it is terminated. ``subscribe`` stores
the first message of each type, field by field, in an .npz file and exits 0, or exits 1 when
the timeout passes first.
"""

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState


def build_messages(data) -> tuple[Image, JointState]:
    image = Image()
    image.header.stamp.sec = int(data['stamp'][0])
    image.header.stamp.nanosec = int(data['stamp'][1])
    image.header.frame_id = str(data['image_frame_id'])
    image.height = int(data['image_height'])
    image.width = int(data['image_width'])
    image.encoding = str(data['image_encoding'])
    image.is_bigendian = 0
    image.step = int(data['image_step'])
    image.data = data['image_data'].tobytes()

    joints = JointState()
    joints.header.stamp = image.header.stamp
    joints.name = [str(name) for name in data['joint_names']]
    joints.position = data['joint_position'].tolist()
    joints.velocity = data['joint_velocity'].tolist()
    joints.effort = data['joint_effort'].tolist()
    return image, joints


def publish(args) -> int:
    data = np.load(args.data)
    image, joints = build_messages(data)
    node = Node('dds_smoke_publisher')
    image_pub = node.create_publisher(Image, args.prefix + '/image_raw', 10)
    joints_pub = node.create_publisher(JointState, args.prefix + '/joint_states', 10)

    def send():
        image_pub.publish(image)
        joints_pub.publish(joints)

    node.create_timer(0.05, send)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    return 0


def subscribe(args) -> int:
    node = Node('dds_smoke_subscriber')
    received = {}

    def on_image(msg: Image):
        received.setdefault('image', msg)

    def on_joints(msg: JointState):
        received.setdefault('joints', msg)

    node.create_subscription(Image, args.prefix + '/image_raw', on_image, 10)
    node.create_subscription(JointState, args.prefix + '/joint_states', on_joints, 10)
    deadline = time.monotonic() + args.timeout
    while len(received) < 2 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if len(received) < 2:
        missing = sorted({'image', 'joints'} - set(received))
        print(f'timed out after {args.timeout} s waiting for {missing}', file=sys.stderr)
        return 1

    image, joints = received['image'], received['joints']
    np.savez(
        args.out,
        stamp=np.array([image.header.stamp.sec, image.header.stamp.nanosec], dtype=np.int64),
        image_frame_id=image.header.frame_id,
        image_height=image.height,
        image_width=image.width,
        image_encoding=image.encoding,
        image_is_bigendian=image.is_bigendian,
        image_step=image.step,
        image_data=np.frombuffer(bytes(image.data), dtype=np.uint8),
        joint_stamp=np.array([joints.header.stamp.sec, joints.header.stamp.nanosec],
                             dtype=np.int64),
        joint_names=np.array(joints.name),
        joint_position=np.array(joints.position, dtype=np.float64),
        joint_velocity=np.array(joints.velocity, dtype=np.float64),
        joint_effort=np.array(joints.effort, dtype=np.float64),
    )
    return 0


def main() -> int:
    rclpy.init(args=sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=('publish', 'subscribe'))
    parser.add_argument('--prefix', required=True, help='topic namespace, e.g. /dds_smoke_1')
    parser.add_argument('--data', help='publish: .npz with the message fields to send')
    parser.add_argument('--out', help='subscribe: .npz to write the received fields to')
    parser.add_argument('--timeout', type=float, default=20.0,
                        help='subscribe: seconds to wait for both messages')
    args = parser.parse_args(rclpy.utilities.remove_ros_args(sys.argv)[1:])
    try:
        return publish(args) if args.mode == 'publish' else subscribe(args)
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
