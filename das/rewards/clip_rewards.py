"""Rewards from CLIP-family models: LAION aesthetic, CLIPScore and PickScore.

All keep the autograd graph from images to score; prompt embeddings are computed once
per distinct prompt string and cached.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from das.clip import DEFAULT_CLIP, CLIPImageFeaturizer, _tensor, load_clip, load_tokenizer

AESTHETIC_MLP_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"
)


class AestheticMLP(nn.Module):
    """The LAION aesthetic predictor head: 768→1024→128→64→16→1 with dropouts.

    Args:
        input_dim: CLIP embedding size (768 for ViT-L/14).
    """

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(N, input_dim)` L2-normalized embeddings -> `(N,)` scores."""
        return self.layers(embeddings).squeeze(-1)

    @classmethod
    def from_file(cls, path: str | os.PathLike, input_dim: int = 768) -> AestheticMLP:
        """Loads the LAION weights (``.safetensors``, or the original ``.pth`` with ``weights_only=True``)."""
        from das.adapters.loading import WeightsNotAvailableError

        path = str(path)
        if not os.path.isfile(path):
            raise WeightsNotAvailableError(
                f"The aesthetic MLP weights {path!r} do not exist; download {AESTHETIC_MLP_URL} and set the reward's "
                f"mlp_path to it."
            )
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        mlp = cls(input_dim)
        mlp.load_state_dict(state)
        return mlp


class AestheticReward(nn.Module):
    """LAION aesthetic score: CLIP ViT-L/14 image embedding, L2-normalized, through the MLP.

    Args:
        featurizer: a normalizing :class:`~das.clip.CLIPImageFeaturizer`.
        mlp: the :class:`AestheticMLP` (its input size must match ``featurizer.dim``).
    """

    differentiable = True

    def __init__(self, featurizer: CLIPImageFeaturizer, mlp: AestheticMLP):
        super().__init__()
        if not featurizer.normalize:
            raise ValueError(
                "The aesthetic MLP expects L2-normalized embeddings; build the featurizer with normalize=True."
            )
        self.featurizer = featurizer
        self.mlp = mlp.eval().requires_grad_(False).to(next(featurizer.model.parameters()).device)

    @classmethod
    def from_pretrained(
        cls, clip_model: str | os.PathLike = DEFAULT_CLIP, mlp_path: str | os.PathLike | None = None, clip=None
    ) -> AestheticReward:
        """Loads CLIP and the LAION MLP (``mlp_path``: a local ``.pth``/``.safetensors`` file).

        Args:
            clip_model: hub id or local folder of the ``CLIPModel``.
            mlp_path: the aesthetic MLP weights file.
            clip: an already loaded ``CLIPModel`` (shared with other rewards).
        """
        if not mlp_path:
            from das.adapters.loading import WeightsNotAvailableError

            raise WeightsNotAvailableError(
                f"The aesthetic reward needs the LAION MLP weights; download {AESTHETIC_MLP_URL} "
                "and set the reward's mlp_path to it."
            )
        featurizer = CLIPImageFeaturizer(clip if clip is not None else load_clip(clip_model))
        return cls(featurizer, AestheticMLP.from_file(mlp_path, featurizer.dim))

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] -> `(N,)` aesthetic scores (prompts ignored)."""
        features = self.featurizer(images)
        return self.mlp(features.to(next(self.mlp.parameters()).dtype)).float()


class CLIPSimilarityReward(nn.Module):
    """``scale · cos(image_embedding, text_embedding)``: CLIPScore (scale 1) and PickScore.

    Args:
        model: a ``transformers.CLIPModel``.
        tokenizer: its tokenizer.
        scale: multiplies the cosine; ``"logit_scale"`` uses the model's ``exp(logit_scale)``
            (PickScore's definition).
        name: for logs.
    """

    differentiable = True

    def __init__(self, model, tokenizer, scale: float | str = 1.0, name: str = "clipscore"):
        super().__init__()
        self.featurizer = CLIPImageFeaturizer(model, normalize=True)
        self.model = self.featurizer.model
        self.tokenizer = tokenizer
        self.scale = float(model.logit_scale.exp()) if scale == "logit_scale" else float(scale)
        self.name = name
        self._text_cache: dict[str, torch.Tensor] = {}

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalized text embeddings `(N, dim)`, computed once per distinct prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            device = next(self.model.parameters()).device
            max_length = min(
                getattr(self.tokenizer, "model_max_length", 77) or 77,
                self.model.config.text_config.max_position_embeddings,
            )
            tokens = self.tokenizer(
                missing, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            )
            with torch.no_grad():
                features = _tensor(
                    self.model.get_text_features(
                        input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
                    )
                ).float()
            features = features / features.norm(dim=-1, keepdim=True)
            self._text_cache.update(zip(missing, features))
        return torch.stack([self._text_cache[p] for p in prompts])

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] and `N` prompts -> `(N,)` scores."""
        if prompts is None or len(prompts) != images.shape[0]:
            raise ValueError(f"The {self.name} reward needs one prompt per image.")
        return self.scale * (self.featurizer(images) * self.text_embeddings(list(prompts))).sum(-1)


def clip_score(
    clip_model: str | os.PathLike = DEFAULT_CLIP, tokenizer: str | os.PathLike | None = None, clip=None
) -> CLIPSimilarityReward:
    """CLIPScore: the cosine similarity of CLIP image and prompt embeddings (ViT-L/14 by default)."""
    model = clip if clip is not None else load_clip(clip_model, "CLIP model", "the reward's clip_model")
    return CLIPSimilarityReward(model, load_tokenizer(tokenizer or clip_model), scale=1.0, name="clipscore")


def pick_score(
    model: str | os.PathLike = "yuvalkirstain/PickScore_v1",
    processor: str | os.PathLike = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
) -> CLIPSimilarityReward:
    """PickScore: ``exp(logit_scale) · cos`` of the PickScore CLIP-H model."""
    clip = load_clip(model, "PickScore model", "the reward's model path")
    return CLIPSimilarityReward(
        clip,
        load_tokenizer(processor, "PickScore processor", "the reward's processor path"),
        scale="logit_scale",
        name="pickscore",
    )
