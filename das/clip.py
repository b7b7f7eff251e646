"""CLIP preprocessing in torch ops and a frozen, differentiable CLIP image featurizer.

One preprocessing implementation (resize the shorter side, center crop, CLIP mean/std)
shared by every CLIP-based reward and by the online loop's featurizer. It keeps the
autograd graph: no PIL, no uint8 round-trip, no torchvision.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def clip_preprocess(
    images: torch.Tensor, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, mode: str = "bicubic"
) -> torch.Tensor:
    """CLIP's image preprocessing as differentiable torch ops.

    Args:
        images: `(N, 3, H, W)` in [0, 1].
        size: the model's input resolution.
        mean: per-channel normalization mean.
        std: per-channel normalization std.
        mode: ``"bicubic"`` (CLIP's) or ``"bilinear"``.

    Returns:
        `(N, 3, size, size)` normalized pixel values.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"CLIP preprocessing expects images of shape (N, 3, H, W), got {tuple(images.shape)}.")
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = images.float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=scale < 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _tensor(output) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose pooler is the projection (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(
    model_id_or_path: str | os.PathLike = DEFAULT_CLIP,
    what: str = "CLIP model",
    config_hint: str = "the reward's clip_model",
):
    """``CLIPModel.from_pretrained`` with the clear missing-weights error."""
    from transformers import CLIPModel

    from das.adapters.loading import load_pretrained

    return load_pretrained(CLIPModel.from_pretrained, model_id_or_path, what, config_hint)


def load_tokenizer(
    model_id_or_path: str | os.PathLike, what: str = "CLIP tokenizer", config_hint: str = "the reward's processor path"
):
    """``CLIPTokenizer.from_pretrained`` (falls back to ``AutoTokenizer``) with the clear error."""
    from transformers import AutoTokenizer

    from das.adapters.loading import load_pretrained

    return load_pretrained(AutoTokenizer.from_pretrained, model_id_or_path, what, config_hint)


class CLIPImageFeaturizer(torch.nn.Module):
    """Frozen CLIP image embeddings, a :class:`~das.features.Featurizer` (``dim`` = 768 for ViT-L/14).

    Args:
        model: a ``transformers.CLIPModel`` (or ``CLIPVisionModelWithProjection``).
        normalize: L2-normalize the embeddings.
        interpolation: resize mode of the preprocessing.
    """

    def __init__(self, model, normalize: bool = True, interpolation: str = "bicubic"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.normalize = normalize
        self.interpolation = interpolation
        config = model.config
        vision = getattr(config, "vision_config", config)
        self.image_size = int(vision.image_size)
        self.dim = int(getattr(config, "projection_dim", None) or vision.projection_dim)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | os.PathLike = DEFAULT_CLIP, **kwargs) -> CLIPImageFeaturizer:
        """Loads a ``CLIPModel`` from a hub id or local folder (clear error if missing)."""
        return cls(load_clip(model_id_or_path), **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] -> embeddings `(N, dim)` (float32); differentiable."""
        param = next(self.model.parameters())
        pixels = clip_preprocess(images, self.image_size, mode=self.interpolation).to(param.dtype)
        if hasattr(self.model, "get_image_features"):
            features = _tensor(self.model.get_image_features(pixel_values=pixels))
        else:
            features = self.model(pixel_values=pixels).image_embeds
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True) if self.normalize else features
