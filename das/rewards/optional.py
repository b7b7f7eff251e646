"""Rewards that need heavy optional packages, imported only when chosen.

* ImageReward (``pip install "das-toolkit[imagereward]"``): BLIP + MLP, scored
  differentiably through the package's model internals.
* HPSv2 (``pip install "das-toolkit[hpsv2]"``): an OpenCLIP ViT-H/14 fine-tuned on human
  preferences; the score is the cosine of image and prompt embeddings.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from das.clip import clip_preprocess


class MissingExtraError(ImportError):
    """An optional dependency of a reward is not installed."""


def require(module: str, reward: str, extra: str):
    """Imports `module` or raises :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"The {reward} reward needs the optional package {module!r}; "
            f'install it with pip install "das-toolkit[{extra}]".'
        ) from error


class ImageRewardScore(nn.Module):
    """ImageReward (Xu et al., 2023), differentiable in the images.

    Args:
        model: an ``ImageReward.ImageReward`` model (``ImageReward.load(...)``).
    """

    differentiable = True

    def __init__(self, model):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = "ImageReward-v1.0", device: str = "cpu"
    ) -> ImageRewardScore:
        """Loads via ``ImageReward.load`` (a name or a local checkpoint path)."""
        from das.adapters.loading import WeightsNotAvailableError, missing_weights_message

        rm = require("ImageReward", "imagereward", "imagereward")
        try:
            return cls(rm.load(str(name_or_path), device=device))
        except (OSError, RuntimeError) as error:
            raise WeightsNotAvailableError(
                missing_weights_message("ImageReward model", name_or_path, "the reward's model path")
            ) from error

    def _tokens(self, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tok = self.model.blip.tokenizer(
                missing, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
            )
            for i, p in enumerate(missing):
                self._text_cache[p] = (tok.input_ids[i], tok.attention_mask[i])
        ids = torch.stack([self._text_cache[p][0] for p in prompts]).to(device)
        mask = torch.stack([self._text_cache[p][1] for p in prompts]).to(device)
        return ids, mask

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] and `N` prompts -> `(N,)` normalized ImageReward scores."""
        if prompts is None:
            raise ValueError("The imagereward reward needs one prompt per image.")
        param = next(self.model.parameters())
        pixels = clip_preprocess(images, 224).to(param.dtype)
        embeds = self.model.blip.visual_encoder(pixels)
        atts = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
        ids, mask = self._tokens(list(prompts), embeds.device)
        out = self.model.blip.text_encoder(
            ids, attention_mask=mask, encoder_hidden_states=embeds, encoder_attention_mask=atts, return_dict=True
        )
        score = self.model.mlp(out.last_hidden_state[:, 0, :]).squeeze(-1)
        return ((score - self.model.mean) / self.model.std).float()


class HPSv2Score(nn.Module):
    """HPSv2: cosine of OpenCLIP ViT-H/14 (HPS fine-tune) image and prompt embeddings.

    Args:
        model: an OpenCLIP model with the HPSv2 weights loaded.
        tokenizer: the OpenCLIP tokenizer.
    """

    differentiable = True

    def __init__(self, model, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> HPSv2Score:
        """Loads OpenCLIP ViT-H-14 and the HPSv2 checkpoint (a local ``HPS_v2_compressed.pt``, or the hub's copy)."""
        from das.adapters.loading import WeightsNotAvailableError, load_pretrained, missing_weights_message

        require("hpsv2", "hpsv2", "hpsv2")
        open_clip = require("open_clip", "hpsv2", "hpsv2")
        if checkpoint is None:
            from huggingface_hub import hf_hub_download

            checkpoint = load_pretrained(
                lambda repo, **kw: hf_hub_download(repo, **kw),
                "xswu/HPSv2",
                "HPSv2 checkpoint",
                "the reward's checkpoint path",
                filename="HPS_v2_compressed.pt",
            )
        if not os.path.isfile(str(checkpoint)):
            raise WeightsNotAvailableError(
                missing_weights_message("HPSv2 checkpoint", checkpoint, "the reward's checkpoint path")
            )
        model = open_clip.create_model("ViT-H-14", pretrained=None, device=device)
        state = torch.load(str(checkpoint), map_location=device, weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
        return cls(model, open_clip.get_tokenizer("ViT-H-14"))

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] and `N` prompts -> `(N,)` HPSv2 scores."""
        if prompts is None:
            raise ValueError("The hpsv2 reward needs one prompt per image.")
        param = next(self.model.parameters())
        features = self.model.encode_image(clip_preprocess(images, 224).to(param.dtype)).float()
        features = features / features.norm(dim=-1, keepdim=True)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            with torch.no_grad():
                text = self.model.encode_text(self.tokenizer(missing).to(param.device)).float()
            self._text_cache.update(zip(missing, text / text.norm(dim=-1, keepdim=True)))
        return (features * torch.stack([self._text_cache[p] for p in prompts])).sum(-1)
