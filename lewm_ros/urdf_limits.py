"""Read joint limits from a URDF document (standard library XML parser, no ROS)."""

from dataclasses import dataclass
import math
from pathlib import Path
import xml.etree.ElementTree as ET

# Joint types that move and therefore get limits; fixed, floating and planar joints are skipped.
MOVABLE_TYPES = ('revolute', 'continuous', 'prismatic')


@dataclass(frozen=True)
class JointLimit:
    """Limits of one joint: position (rad or m), velocity (rad/s or m/s), effort (N m or N).

    Unbounded values are ``-inf``/``inf``: a continuous joint has no position limits and a
    missing ``velocity`` attribute means no velocity limit.
    """

    name: str
    joint_type: str
    lower: float
    upper: float
    velocity: float
    effort: float


def _attribute(element, name: str, default: float, joint: str) -> float:
    text = element.get(name) if element is not None else None
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f'joint {joint!r}: attribute {name}="{text}" is not a number') from None


def parse_urdf_limits(urdf: str, use_safety_controller: bool = True) -> dict[str, JointLimit]:
    """Parse the limits of every movable joint of a URDF string.

    Args:
        urdf: the URDF XML document (the ``robot_description`` string).
        use_safety_controller: when a joint has a ``<safety_controller>`` with
            ``soft_lower_limit``/``soft_upper_limit``, narrow the position limits to them.

    Returns:
        Joint name -> :class:`JointLimit`, in document order. Mimic joints are left out because
        a controller never commands them.

    Raises:
        ValueError: for XML that does not parse, a root that is not ``<robot>``, a revolute or
            prismatic joint without ``<limit lower upper>``, a non-numeric attribute, or
            ``lower > upper``.
    """
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as error:
        raise ValueError(f'robot description is not valid XML: {error}') from None
    if root.tag != 'robot':
        raise ValueError(f'robot description root element is <{root.tag}>, expected <robot>')

    limits = {}
    for joint in root.iter('joint'):
        # <joint> also appears inside <transmission> and <ros2_control> without a type.
        joint_type = joint.get('type')
        name = joint.get('name')
        if joint_type not in MOVABLE_TYPES or name is None:
            continue
        if joint.find('mimic') is not None:
            continue
        limit = joint.find('limit')
        if joint_type == 'continuous':
            lower, upper = -math.inf, math.inf
        else:
            if limit is None or limit.get('lower') is None or limit.get('upper') is None:
                raise ValueError(f'{joint_type} joint {name!r} has no <limit lower= upper=>; '
                                 'the URDF must give its position limits')
            lower = _attribute(limit, 'lower', -math.inf, name)
            upper = _attribute(limit, 'upper', math.inf, name)
        velocity = _attribute(limit, 'velocity', math.inf, name)
        effort = _attribute(limit, 'effort', math.inf, name)

        safety = joint.find('safety_controller')
        if use_safety_controller and safety is not None:
            lower = max(lower, _attribute(safety, 'soft_lower_limit', -math.inf, name))
            upper = min(upper, _attribute(safety, 'soft_upper_limit', math.inf, name))
        if lower > upper:
            raise ValueError(f'joint {name!r}: lower limit {lower} is above upper limit {upper}')
        if velocity <= 0:
            raise ValueError(f'joint {name!r}: velocity limit must be positive, got {velocity}')
        limits[name] = JointLimit(name=name, joint_type=joint_type, lower=lower, upper=upper,
                                  velocity=velocity, effort=effort)
    return limits


def load_urdf_limits(path, use_safety_controller: bool = True) -> dict[str, JointLimit]:
    """Parse the joint limits of a URDF file (see :func:`parse_urdf_limits`)."""
    return parse_urdf_limits(Path(path).read_text(encoding='utf-8'), use_safety_controller)
