"""Latent-space planning: costs, CEM and MPPI optimisers, and the receding-horizon planner.

No ROS imports. The contract with the model is in docs/architecture.md (Planning); details and
defaults are in docs/planning.md.
"""

from .actions import ActionBounds, ActionScaler
from .cost import GoalCost
from .linear import LinearLatentModel, LinearModelConfig
from .optimizers import CEMOptimizer, MPPIOptimizer, Optimizer, OptimizerResult
from .planner import make_optimizer, Planner, PlannerConfig, PlanResult

__all__ = [
    'ActionBounds', 'ActionScaler', 'CEMOptimizer', 'GoalCost', 'LinearLatentModel',
    'LinearModelConfig', 'MPPIOptimizer', 'make_optimizer', 'Optimizer', 'OptimizerResult',
    'PlanResult', 'Planner', 'PlannerConfig',
]
