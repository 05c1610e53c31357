"""LeWorldModel control stack for ROS 2: perceive, plan in latent space, actuate safely."""

__version__ = '0.1.0'
