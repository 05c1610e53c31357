"""Tests of lewm_ros.urdf_limits on small URDF documents written in the test."""

import math

import pytest

from lewm_ros.urdf_limits import load_urdf_limits, parse_urdf_limits

URDF = """<?xml version="1.0"?>
<robot name="arm">
  <link name="base"/><link name="a"/><link name="b"/><link name="c"/><link name="d"/>
  <link name="e"/><link name="f"/>
  <joint name="mount" type="fixed"><parent link="base"/><child link="a"/></joint>
  <joint name="shoulder" type="revolute">
    <parent link="a"/><child link="b"/>
    <limit lower="-1.5" upper="1.5" velocity="2.0" effort="10"/>
  </joint>
  <joint name="elbow" type="revolute">
    <parent link="b"/><child link="c"/>
    <limit lower="-2.0" upper="2.0" velocity="1.0" effort="5"/>
    <safety_controller soft_lower_limit="-1.8" soft_upper_limit="2.5" k_position="10"
                       k_velocity="1"/>
  </joint>
  <joint name="wrist" type="continuous">
    <parent link="c"/><child link="d"/>
    <limit velocity="3.0" effort="1"/>
  </joint>
  <joint name="slide" type="prismatic">
    <parent link="d"/><child link="e"/>
    <limit lower="0.0" upper="0.1" velocity="0.2" effort="50"/>
  </joint>
  <joint name="finger_mimic" type="revolute">
    <parent link="e"/><child link="f"/>
    <limit lower="0" upper="1" velocity="1" effort="1"/>
    <mimic joint="shoulder"/>
  </joint>
  <ros2_control name="arm" type="system">
    <joint name="shoulder"><command_interface name="position"/></joint>
  </ros2_control>
</robot>
"""


def test_movable_joints_in_document_order():
    limits = parse_urdf_limits(URDF)
    assert list(limits) == ['shoulder', 'elbow', 'wrist', 'slide']


def test_revolute_and_prismatic_values():
    limits = parse_urdf_limits(URDF)
    shoulder = limits['shoulder']
    assert (shoulder.lower, shoulder.upper, shoulder.velocity, shoulder.effort) == (
        -1.5, 1.5, 2.0, 10.0)
    assert shoulder.joint_type == 'revolute'
    slide = limits['slide']
    assert (slide.lower, slide.upper, slide.velocity) == (0.0, 0.1, 0.2)


def test_safety_controller_narrows_only():
    limits = parse_urdf_limits(URDF)
    # The soft lower limit narrows; the soft upper limit 2.5 is wider and is ignored.
    assert limits['elbow'].lower == -1.8
    assert limits['elbow'].upper == 2.0
    plain = parse_urdf_limits(URDF, use_safety_controller=False)
    assert plain['elbow'].lower == -2.0


def test_continuous_joint_is_unbounded():
    wrist = parse_urdf_limits(URDF)['wrist']
    assert wrist.lower == -math.inf
    assert wrist.upper == math.inf
    assert wrist.velocity == 3.0


def test_load_from_file(tmp_path):
    path = tmp_path / 'arm.urdf'
    path.write_text(URDF)
    assert load_urdf_limits(path) == parse_urdf_limits(URDF)


def test_revolute_without_limit_is_rejected():
    urdf = '<robot name="r"><joint name="j" type="revolute"/></robot>'
    with pytest.raises(ValueError, match="revolute joint 'j' has no <limit"):
        parse_urdf_limits(urdf)


def test_bad_documents_are_rejected():
    with pytest.raises(ValueError, match='not valid XML'):
        parse_urdf_limits('<robot>')
    with pytest.raises(ValueError, match='root element is <sdf>'):
        parse_urdf_limits('<sdf/>')
    bad_number = ('<robot name="r"><joint name="j" type="revolute">'
                  '<limit lower="x" upper="1" velocity="1"/></joint></robot>')
    with pytest.raises(ValueError, match='attribute lower="x" is not a number'):
        parse_urdf_limits(bad_number)
    inverted = ('<robot name="r"><joint name="j" type="revolute">'
                '<limit lower="1" upper="-1" velocity="1"/></joint></robot>')
    with pytest.raises(ValueError, match='lower limit 1.0 is above upper limit -1.0'):
        parse_urdf_limits(inverted)
