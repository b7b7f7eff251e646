"""Rewards: callables ``images -> (N,)`` with a ``differentiable`` flag."""

from das.rewards.base import FunctionReward, Reward, WeightedSum

__all__ = ["FunctionReward", "Reward", "WeightedSum"]
