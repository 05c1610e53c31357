"""``ArmEnv``: the demo arm of ``urdf/lewm_arm.urdf`` in MuJoCo, rendered headless.

The URDF is loaded with :class:`mujoco.MjSpec` at run time and the scene is added around it:
a table whose top is the URDF ``world`` link (z = 0), a floor, lights, a pushable cube, a goal
marker and the scene camera, which sits on the URDF's ``camera_optical_frame``. Each joint gets a
position actuator whose force range is the URDF effort limit. The arm links are gravity
compensated, like a position-controlled arm whose drives compensate gravity.

One call of :meth:`ArmEnv.step` is one control period. The action is a change of the commanded
joint positions (radians): it is clipped per joint to ``max_delta`` and the resulting target to
the joint limits, so ``q_cmd[t] = clip(q_cmd[t-1] + clip(action))``. After :meth:`reset` the
commanded positions equal the measured ones.

Set ``MUJOCO_GL=egl`` (or ``osmesa``) before the first render on a machine without a display.
"""

import logging
from pathlib import Path

import mujoco
import numpy as np

from lewm_ros.paths import share_path

logger = logging.getLogger(__name__)

CAMERA_NAME = 'scene_camera'
EE_BODY = 'tool_link'
OBJECT_BODY = 'cube'
GOAL_BODY = 'goal_marker'
# Geom groups: MuJoCo draws groups 0-2 by default. URDF collision geoms go to group 3 so that
# they do not z-fight with the visual geoms, the goal marker to group 4 (hidden unless asked).
COLLISION_GROUP = 3
GOAL_GROUP = 4
# Collision bits: arm geoms collide with the table and the cube but not with each other.
ARM_CONTYPE, ARM_CONAFFINITY = 2, 1
SCENE_CONTYPE, SCENE_CONAFFINITY = 1, 2
CUBE_CONTYPE, CUBE_CONAFFINITY = 1, 3

DEFAULT_CUBE_POSITION = (0.30, 0.15)
CUBE_HALF_SIZE = 0.02
# Clearance that sampled configurations keep between every arm body origin and the table top,
# so that random starts and exploration waypoints do not rest on the table (metres).
TABLE_CLEARANCE = 0.06


def default_urdf_path() -> Path:
    """Return the path of the bundled ``urdf/lewm_arm.urdf``."""
    return share_path('urdf', 'lewm_arm.urdf')


def _load_arm_spec(urdf_path: Path) -> mujoco.MjSpec:
    """Parse the URDF into a spec that keeps visual geoms and the fixed camera frames."""
    text = Path(urdf_path).read_text()
    # MuJoCo's URDF reader drops visual geoms and fuses fixed links by default. The injected
    # <mujoco> element changes that for this parse only; the file on disk stays plain URDF.
    extension = ('<mujoco><compiler discardvisual="false" fusestatic="false" '
                 'balanceinertia="false" angle="radian"/></mujoco>')
    start = text.find('<robot')
    if start < 0:
        raise ValueError(f'{urdf_path} is not a URDF file: no <robot> element')
    end = text.find('>', start)
    return mujoco.MjSpec.from_string(text[:end + 1] + extension + text[end + 1:])


class ArmEnv:
    """The MuJoCo arm with a scene camera, stepped at a fixed control period.

    Args:
        image_size: side of the square RGB images from :meth:`render` (pixels).
        control_period: simulated time of one :meth:`step` (seconds).
        timestep: physics time step (seconds); ``control_period`` must be a multiple of it.
        max_delta: largest change of a joint target per step (radians), a scalar or one value
            per joint. Defaults to velocity limit times ``control_period`` per joint.
        urdf_path: the arm description, ``urdf/lewm_arm.urdf`` by default.
        with_object: add the pushable cube on the table.
        show_goal_marker: draw the goal marker in rendered images. Off by default, so that goal
            images from :meth:`render_goal` and camera frames look the same.
        kp: position gain of the joint actuators (N m / rad).
        antialias: render with 4x multisampling. Without it, edges are jagged but software
            rendering (Mesa llvmpipe) is several times faster.
        seed: seed of the random generator used by :meth:`reset` without ``qpos``.
    """

    def __init__(self, image_size: int = 64, control_period: float = 0.1,
                 timestep: float = 0.002, max_delta=None, urdf_path=None,
                 with_object: bool = True, show_goal_marker: bool = False,
                 kp: float = 150.0, antialias: bool = True, seed: int | None = None) -> None:
        if int(image_size) < 8:
            raise ValueError(f'image_size must be at least 8 pixels, got {image_size}')
        substeps = control_period / timestep
        if control_period <= 0 or timestep <= 0 or abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                f'control_period {control_period} s must be a positive multiple of the physics '
                f'timestep {timestep} s; choose for example 0.1 and 0.002')
        self.image_size = int(image_size)
        self.control_period = float(control_period)
        self.substeps = int(round(substeps))
        self.urdf_path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
        self.with_object = with_object
        self.show_goal_marker = show_goal_marker
        self.antialias = antialias

        self.model = self._build_model(timestep, kp)
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)

        self.joint_names = [self.model.joint(self.model.actuator_trnid[i, 0]).name
                            for i in range(self.model.nu)]
        joint_ids = self.model.actuator_trnid[:, 0]
        self._qpos_index = self.model.jnt_qposadr[joint_ids].copy()
        self._qvel_index = self.model.jnt_dofadr[joint_ids].copy()
        self.joint_limits = self.model.jnt_range[joint_ids].copy()
        self.velocity_limits = np.array(self._urdf_velocity_limits())
        if max_delta is None:
            self.max_delta = self.velocity_limits * self.control_period
        else:
            self.max_delta = np.broadcast_to(
                np.asarray(max_delta, dtype=np.float64), (self.num_joints,)).copy()
        if not np.all(self.max_delta > 0):
            raise ValueError(f'max_delta must be positive, got {self.max_delta}')

        self._arm_bodies = self._arm_body_ids()
        self._renderer = None
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[GOAL_GROUP] = int(show_goal_marker)
        self._rng = np.random.default_rng(seed)
        self._q_cmd = np.zeros(self.num_joints)
        self.reset(qpos=np.zeros(self.num_joints))

    # ------------------------------------------------------------------ model construction

    def _build_model(self, timestep: float, kp: float) -> mujoco.MjModel:
        spec = _load_arm_spec(self.urdf_path)
        spec.modelname = 'lewm_arm_scene'
        spec.option.timestep = timestep
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.visual.global_.offwidth = max(640, self.image_size)
        spec.visual.global_.offheight = max(480, self.image_size)
        spec.visual.quality.offsamples = 4 if self.antialias else 0
        spec.visual.headlight.ambient = [0.25, 0.25, 0.25]
        spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]

        arm_body_names = {body.name for body in spec.bodies if body.name != 'world'}
        for geom in spec.geoms:
            if geom.contype != 0 or geom.conaffinity != 0:
                geom.group = COLLISION_GROUP
                geom.contype, geom.conaffinity = ARM_CONTYPE, ARM_CONAFFINITY
        for body in spec.bodies:
            if body.name in arm_body_names:
                body.gravcomp = 1.0
        for joint in spec.joints:
            # Reflected rotor inertia of a geared motor; it also keeps the stiff position
            # loop stable at a 2 ms time step.
            joint.armature = 0.01
            actuator = spec.add_actuator(name=joint.name, target=joint.name,
                                         trntype=mujoco.mjtTrn.mjTRN_JOINT)
            actuator.set_to_position(kp=kp, dampratio=1.0)
            actuator.ctrllimited = 1
            actuator.ctrlrange = joint.range

        self._add_scene(spec)
        optical = spec.body('camera_optical_frame')
        if optical is None:
            raise ValueError(f'{self.urdf_path} has no camera_optical_frame link')
        # A MuJoCo camera looks along its -z axis with +y up. The ROS optical frame looks along
        # +z with +y down, so the camera is the optical frame turned half a turn about x.
        optical.add_camera(name=CAMERA_NAME, quat=[0, 1, 0, 0], fovy=45.0)
        return spec.compile()

    def _add_scene(self, spec: mujoco.MjSpec) -> None:
        world = spec.worldbody
        spec.add_texture(name='grid', type=mujoco.mjtTexture.mjTEXTURE_2D,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                         rgb1=[0.30, 0.32, 0.36], rgb2=[0.24, 0.26, 0.30],
                         width=256, height=256)
        spec.add_material(name='floor', textures=['', 'grid'], texrepeat=[8, 8])
        spec.add_texture(name='sky', type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                         rgb1=[0.55, 0.62, 0.70], rgb2=[0.10, 0.12, 0.15], width=64, height=64)

        world.add_geom(name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.05],
                       pos=[0, 0, -0.75], material='floor',
                       contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY)
        # The table reaches past the arm's 0.47 m radius on every side, so a pushed cube stays
        # on it.
        world.add_geom(name='table', type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.6, 0.6, 0.02],
                       pos=[0.05, 0, -0.02], rgba=[0.72, 0.58, 0.42, 1],
                       contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY)

        world.add_light(name='key', pos=[0.6, -0.6, 1.6], dir=[-0.4, 0.4, -1.0],
                        diffuse=[0.6, 0.6, 0.6], specular=[0.2, 0.2, 0.2], castshadow=False)
        world.add_light(name='fill', pos=[-0.6, 0.6, 1.5], dir=[0.4, -0.4, -1.0],
                        diffuse=[0.3, 0.3, 0.3], specular=[0, 0, 0], castshadow=False)

        if self.with_object:
            cube = world.add_body(name=OBJECT_BODY,
                                  pos=[*DEFAULT_CUBE_POSITION, CUBE_HALF_SIZE])
            cube.add_freejoint(name='cube_free')
            cube.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_SIZE] * 3,
                          mass=0.05, rgba=[0.85, 0.12, 0.12, 1], friction=[0.8, 0.01, 0.001],
                          contype=CUBE_CONTYPE, conaffinity=CUBE_CONAFFINITY)
        goal = world.add_body(name=GOAL_BODY, mocap=True, pos=[0, 0, -1])
        goal.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.03, 0, 0],
                      rgba=[0.1, 0.9, 0.2, 0.5], group=GOAL_GROUP, contype=0, conaffinity=0)

    def _urdf_velocity_limits(self) -> list[float]:
        import xml.etree.ElementTree as ElementTree

        root = ElementTree.parse(self.urdf_path).getroot()
        limits = {}
        for joint in root.iter('joint'):
            limit = joint.find('limit')
            if limit is not None and 'velocity' in limit.attrib:
                limits[joint.get('name')] = float(limit.get('velocity'))
        missing = [name for name in self.joint_names if name not in limits]
        if missing:
            raise ValueError(f'{self.urdf_path}: joints {missing} have no velocity limit')
        return [limits[name] for name in self.joint_names]

    def _arm_body_ids(self) -> np.ndarray:
        ids = []
        for name in ('upper_arm_link', 'forearm_link', EE_BODY):
            body_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
            if body_id >= 0:
                ids.append(body_id)
        return np.array(ids, dtype=int)

    # ------------------------------------------------------------------ state

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def qpos(self) -> np.ndarray:
        """Measured joint positions ``(A,)`` in radians."""
        return self.data.qpos[self._qpos_index].copy()

    @property
    def qvel(self) -> np.ndarray:
        """Measured joint velocities ``(A,)`` in radians per second."""
        return self.data.qvel[self._qvel_index].copy()

    @property
    def q_cmd(self) -> np.ndarray:
        """Commanded joint positions ``(A,)`` in radians (the actuator targets)."""
        return self._q_cmd.copy()

    @property
    def time(self) -> float:
        """Simulated time since the last reset (seconds)."""
        return float(self.data.time)

    def ee_position(self) -> np.ndarray:
        """Return the tool centre ``(3,)`` in the world frame (metres)."""
        return self.data.body(EE_BODY).xpos.copy()

    def ee_position_at(self, qpos) -> np.ndarray:
        """Return the tool centre ``(3,)`` (metres) for joint positions ``qpos`` ``(A,)``.

        Forward kinematics only: the simulation state is not changed.
        """
        q = self.check_qpos(qpos)
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self._qpos_index] = q
        mujoco.mj_kinematics(self.model, scratch)
        return scratch.body(EE_BODY).xpos.copy()

    def object_position(self) -> np.ndarray | None:
        """Return the cube centre ``(3,)`` in metres, or None without the cube."""
        if not self.with_object:
            return None
        return self.data.body(OBJECT_BODY).xpos.copy()

    def check_qpos(self, qpos) -> np.ndarray:
        """Return ``qpos`` as a float array ``(A,)`` after checking its size and limits.

        Raises:
            ValueError: when the size is wrong, a value is not finite or outside the limits.
        """
        q = np.asarray(qpos, dtype=np.float64).reshape(-1)
        if q.shape != (self.num_joints,):
            raise ValueError(
                f'expected {self.num_joints} joint positions {self.joint_names}, got {q.shape}')
        if not np.all(np.isfinite(q)):
            raise ValueError(f'joint positions must be finite, got {q}')
        low, high = self.joint_limits[:, 0], self.joint_limits[:, 1]
        outside = (q < low - 1e-9) | (q > high + 1e-9)
        if outside.any():
            names = [n for n, o in zip(self.joint_names, outside) if o]
            raise ValueError(
                f'joint positions {q} are outside the limits for {names}; limits are '
                f'{self.joint_limits.tolist()}')
        return q

    def is_clear(self, qpos) -> bool:
        """Return True when configuration ``qpos`` keeps the arm above the table and off the cube.

        Checks the current cube pose; the simulation state is not changed.
        """
        q = self.check_qpos(qpos)
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self._qpos_index] = q
        mujoco.mj_kinematics(self.model, scratch)
        if np.any(scratch.xpos[self._arm_bodies, 2] < TABLE_CLEARANCE):
            return False
        mujoco.mj_collision(self.model, scratch)
        return scratch.ncon == 0 or not self._arm_in_contact(scratch)

    def _arm_in_contact(self, data: mujoco.MjData) -> bool:
        arm_geoms = self.model.geom_contype == ARM_CONTYPE
        for contact in data.contact[:data.ncon]:
            if arm_geoms[contact.geom1] or arm_geoms[contact.geom2]:
                return True
        return False

    def sample_configuration(self, rng: np.random.Generator | None = None,
                             max_tries: int = 1000) -> np.ndarray:
        """Draw joint positions ``(A,)`` uniformly within the limits among clear ones.

        Raises:
            RuntimeError: when no clear configuration is found in ``max_tries`` draws.
        """
        rng = self._rng if rng is None else rng
        low, high = self.joint_limits[:, 0], self.joint_limits[:, 1]
        for _ in range(max_tries):
            q = rng.uniform(low, high)
            if self.is_clear(q):
                return q
        raise RuntimeError(f'no clear arm configuration found in {max_tries} draws')

    # ------------------------------------------------------------------ control

    def reset(self, qpos=None, seed: int | None = None, object_position=None) -> None:
        """Reset the simulation with the arm at rest.

        Args:
            qpos: joint positions ``(A,)`` in radians; None draws a clear configuration.
            seed: reseeds the generator used to draw ``qpos``.
            object_position: ``(x, y)`` of the cube on the table in metres; defaults to
                ``DEFAULT_CUBE_POSITION``.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        if self.with_object:
            x, y = DEFAULT_CUBE_POSITION if object_position is None else object_position
            address = self.model.jnt_qposadr[self.model.joint('cube_free').id]
            self.data.qpos[address:address + 7] = [x, y, CUBE_HALF_SIZE, 1, 0, 0, 0]
        q = self.sample_configuration() if qpos is None else self.check_qpos(qpos)
        self.data.qpos[self._qpos_index] = q
        self._q_cmd = q.copy()
        self.data.ctrl[:] = q
        mujoco.mj_forward(self.model, self.data)

    def clip_action(self, action) -> np.ndarray:
        """Return the joint delta ``(A,)`` that :meth:`step` would apply for ``action``.

        Raises:
            ValueError: when the action has the wrong size or a non-finite value.
        """
        delta = np.asarray(action, dtype=np.float64).reshape(-1)
        if delta.shape != (self.num_joints,):
            raise ValueError(
                f'action must have {self.num_joints} joint deltas {self.joint_names}, '
                f'got shape {delta.shape}')
        if not np.all(np.isfinite(delta)):
            raise ValueError(f'action contains NaN or infinity: {delta}')
        delta = np.clip(delta, -self.max_delta, self.max_delta)
        target = np.clip(self._q_cmd + delta, self.joint_limits[:, 0], self.joint_limits[:, 1])
        return target - self._q_cmd

    def step(self, action) -> np.ndarray:
        """Add the joint delta ``action`` ``(A,)`` to the targets and simulate one period.

        Returns:
            The delta actually applied ``(A,)`` after clipping, i.e. ``q_cmd[t] - q_cmd[t-1]``.
        """
        applied = self.clip_action(action)
        self._q_cmd = self._q_cmd + applied
        self.data.ctrl[:] = self._q_cmd
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        # mj_step leaves positions, camera poses and contacts of the state before its last
        # integration; recompute them so that render() and ee_position() match qpos.
        mujoco.mj_forward(self.model, self.data)
        return applied

    def set_goal_marker(self, position) -> None:
        """Move the goal marker to ``position`` ``(3,)`` in metres (drawn only if enabled)."""
        self.data.mocap_pos[0] = np.asarray(position, dtype=np.float64).reshape(3)
        mujoco.mj_kinematics(self.model, self.data)

    # ------------------------------------------------------------------ rendering

    def _render_data(self, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(data, camera=CAMERA_NAME, scene_option=self._scene_option)
        return self._renderer.render().copy()

    def render(self) -> np.ndarray:
        """Render the scene camera: ``uint8 (H, W, 3)`` RGB with ``H = W = image_size``."""
        return self._render_data(self.data)

    def render_goal(self, qpos) -> np.ndarray:
        """Render the arm at joint positions ``qpos`` ``(A,)`` as :meth:`render` would.

        The cube keeps its current pose. The simulation state is not modified.
        """
        q = self.check_qpos(qpos)
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self._qpos_index] = q
        scratch.qvel[:] = 0
        scratch.mocap_pos[:] = self.data.mocap_pos
        scratch.mocap_quat[:] = self.data.mocap_quat
        mujoco.mj_forward(self.model, scratch)
        return self._render_data(scratch)

    def camera_pixel(self, point) -> np.ndarray:
        """Project a world point ``(3,)`` (metres) to image coordinates ``(u, v)`` in pixels.

        ``u`` grows to the right and ``v`` downwards, with ``(0, 0)`` the top left corner.
        Points behind the camera give NaN.
        """
        camera = self.data.camera(CAMERA_NAME)
        rotation = camera.xmat.reshape(3, 3)
        local = rotation.T @ (np.asarray(point, dtype=np.float64) - camera.xpos)
        depth = -local[2]
        if depth <= 0:
            return np.array([np.nan, np.nan])
        fovy = np.deg2rad(self.model.cam_fovy[self.model.camera(CAMERA_NAME).id])
        focal = 0.5 * self.image_size / np.tan(0.5 * fovy)
        centre = 0.5 * self.image_size
        return np.array([centre + focal * local[0] / depth, centre - focal * local[1] / depth])

    def close(self) -> None:
        """Release the renderer's GL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
