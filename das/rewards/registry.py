"""``make_reward(name, **kwargs)``: every reward of the zoo by name.

=========== ============================================== ===========  ===============
name        what                                           α (kl_coeff) needs
=========== ============================================== ===========  ===============
aesthetic   LAION aesthetic predictor on CLIP ViT-L/14     0.005        mlp_path
jpeg        −JPEG size (kB, quality 95); not differentiable 0.1          —
colorfulness Hasler–Süsstrunk colourfulness (0–255 scale)  —            —
pickscore   PickScore (CLIP-H)                             0.0001       —
clipscore   cosine of CLIP ViT-L/14 image/prompt embeds    0.01         —
multi       w·aesthetic + (1−w)·20·clipscore               0.005        mlp_path
imagereward ImageReward                                    —            extra imagereward
hpsv2       HPSv2                                          —            extra hpsv2
=========== ============================================== ===========  ===============
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from das.rewards.base import Reward, WeightedSum

#: Reference α (``kl_coeff``) per reward, from the DAS paper.
REFERENCE_KL_COEFF = {"aesthetic": 0.005, "jpeg": 0.1, "pickscore": 0.0001, "clipscore": 0.01, "multi": 0.005}


def _aesthetic(clip_model: str = "openai/clip-vit-large-patch14", mlp_path: str | None = None, **kw) -> Reward:
    from das.rewards.clip_rewards import AestheticReward

    return AestheticReward.from_pretrained(clip_model, mlp_path, **kw)


def _jpeg(quality: int = 95) -> Reward:
    from das.rewards.jpeg import JPEGCompressibility

    return JPEGCompressibility(quality)


def _colorfulness(scale: float = 1.0) -> Reward:
    from das.rewards.colorfulness import ColorfulnessReward

    return ColorfulnessReward(scale)


def _pickscore(
    model: str = "yuvalkirstain/PickScore_v1", processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
) -> Reward:
    from das.rewards.clip_rewards import pick_score

    return pick_score(model, processor)


def _clipscore(clip_model: str = "openai/clip-vit-large-patch14", tokenizer: str | None = None, **kw) -> Reward:
    from das.rewards.clip_rewards import clip_score

    return clip_score(clip_model, tokenizer, **kw)


def _multi(
    weight: float = 0.5,
    clip_model: str = "openai/clip-vit-large-patch14",
    mlp_path: str | None = None,
    tokenizer: str | None = None,
    clip_scale: float = 20.0,
) -> Reward:
    """The paper's ``w·aesthetic + (1 − w)·20·CLIPScore``, sharing one CLIP model."""
    from das.clip import load_clip
    from das.rewards.clip_rewards import AestheticReward, clip_score

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"The multi reward's weight must lie in [0, 1], got {weight}.")
    clip = load_clip(clip_model)
    aesthetic = AestheticReward.from_pretrained(clip_model, mlp_path, clip=clip)
    return WeightedSum(
        [aesthetic, clip_score(clip_model, tokenizer, clip=clip)], [weight, (1.0 - weight) * clip_scale]
    )


def _imagereward(model: str = "ImageReward-v1.0", device: str = "cpu") -> Reward:
    from das.rewards.optional import ImageRewardScore

    return ImageRewardScore.from_pretrained(model, device)


def _hpsv2(checkpoint: str | None = None, device: str = "cpu") -> Reward:
    from das.rewards.optional import HPSv2Score

    return HPSv2Score.from_pretrained(checkpoint, device)


REWARDS: dict[str, Callable[..., Reward]] = {
    "aesthetic": _aesthetic,
    "jpeg": _jpeg,
    "colorfulness": _colorfulness,
    "pickscore": _pickscore,
    "clipscore": _clipscore,
    "multi": _multi,
    "imagereward": _imagereward,
    "hpsv2": _hpsv2,
}


def check_reward_name(name: str) -> None:
    """Raises ``ValueError`` listing the valid names when `name` is not a reward."""
    if name not in REWARDS:
        raise ValueError(f"Unknown reward {name!r}; choose one of: {', '.join(sorted(REWARDS))}.")


def make_reward(name: str, **kwargs: Any) -> Reward:
    """Builds a reward by name.

    Args:
        name: one of :data:`REWARDS` (``aesthetic``, ``jpeg``, ``colorfulness``, ``pickscore``, ``clipscore``,
            ``multi``, ``imagereward``, ``hpsv2``).
        **kwargs: the reward's loading options (model ids or local paths, see each builder).

    Raises:
        ValueError: unknown name.
        WeightsNotAvailableError: the reward's weights are missing offline.
        MissingExtraError: an optional package (ImageReward, HPSv2) is not installed.
    """
    check_reward_name(name)
    return REWARDS[name](**kwargs)
