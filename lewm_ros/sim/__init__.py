"""The simulated arm and its exploration policies (MuJoCo, no ROS imports).

``ArmEnv`` is imported on first use, so that importing the policies alone does not load MuJoCo.
"""

from lewm_ros.sim.policies import make_policy, POLICIES

__all__ = ['ArmEnv', 'make_policy', 'POLICIES']


def __getattr__(name):
    if name == 'ArmEnv':
        from lewm_ros.sim.arm_env import ArmEnv
        return ArmEnv
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
