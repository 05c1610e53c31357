"""Training and evaluation of LeWM world models: ``lewm train``, ``lewm eval``, metrics, plots.

No ROS imports. ``train`` and ``evaluate`` are the command modules; ``reach`` defines the
visual reach task that ``lewm eval`` runs in the simulator.
"""
