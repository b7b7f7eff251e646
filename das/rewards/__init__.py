"""Rewards: callables ``images -> (N,)`` with a ``differentiable`` flag.

The zoo (aesthetic, JPEG, PickScore, CLIPScore, multi, ImageReward, HPSv2) is built by
name with :func:`make_reward`; its modules load lazily.
"""

from das.rewards.base import FunctionReward, Reward, WeightedSum
from das.rewards.registry import REFERENCE_KL_COEFF, REWARDS, make_reward

_LAZY = {
    "AestheticReward": "das.rewards.clip_rewards",
    "AestheticMLP": "das.rewards.clip_rewards",
    "CLIPSimilarityReward": "das.rewards.clip_rewards",
    "JPEGCompressibility": "das.rewards.jpeg",
    "ImageRewardScore": "das.rewards.optional",
    "HPSv2Score": "das.rewards.optional",
    "MissingExtraError": "das.rewards.optional",
}

__all__ = ["FunctionReward", "Reward", "WeightedSum", "REFERENCE_KL_COEFF", "REWARDS", "make_reward", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'das.rewards' has no attribute {name!r}")
