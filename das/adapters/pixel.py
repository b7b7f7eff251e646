"""Adapter for a bare pixel-space UNet with a scheduler (no VAE): the embedded small models.

Handles a text-conditional ``UNet2DConditionModel`` with a ``CLIPTextModel`` and
``CLIPTokenizer``, or an unconditional ``UNet2DModel``. Pixels live in [-1, 1]; images are
``(x / 2 + 0.5).clamp(0, 1)``.

Folder layout read by :meth:`PixelUNetAdapter.from_pretrained`::

    model/
      unet/           UNet2DConditionModel or UNet2DModel (save_pretrained)
      scheduler/      any diffusers scheduler config (its betas define a DDIM chain)
      text_encoder/   optional, CLIPTextModel (needed by a UNet2DConditionModel)
      tokenizer/      optional, CLIPTokenizer
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from das.adapters.base import Conditioning
from das.adapters.common import NEGATIVE, DiffusersAdapter, resolve_dtype, to_ddim
from das.adapters.loading import WeightsNotAvailableError, load_pretrained


def encode_with_clip(tokenizer, text_encoder, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP text hidden states the way the Stable Diffusion pipelines compute them.

    Args:
        tokenizer: a ``CLIPTokenizer``; prompts are padded/truncated to its ``model_max_length``.
        text_encoder: a ``CLIPTextModel``.
        prompts: ``B`` strings.
        device: where the encoder lives.

    Returns:
        `(B, L, D)` last hidden states.
    """
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


class PixelUNetAdapter(DiffusersAdapter):
    """DDIM chain of a pixel-space UNet, optionally text-conditioned with CFG.

    Args:
        unet: ``UNet2DConditionModel`` (needs `text_encoder` and `tokenizer`) or ``UNet2DModel``.
        scheduler: any diffusers scheduler (or its config); the chain is a ``DDIMScheduler``
            with its coefficients.
        text_encoder: ``CLIPTextModel`` for a conditional UNet.
        tokenizer: ``CLIPTokenizer`` for a conditional UNet.
        num_steps: denoising transitions.
        eta: DDIM stochasticity (1 by default).
        guidance_scale: classifier-free guidance weight; the unconditional branch uses
            `negative_prompt` (empty by default). ``<= 1`` turns guidance off. Ignored by
            unconditional UNets.
        negative_prompt: the text of the unconditional branch.
        height: image height; defaults to the UNet's ``sample_size``.
        width: image width; defaults to the UNet's ``sample_size``.
        device: where everything runs.
        dtype: ``torch.float32``/``float16``/``bfloat16`` or ``"fp32"``/``"fp16"``/``"bf16"``.
    """

    def __init__(
        self,
        unet,
        scheduler,
        text_encoder=None,
        tokenizer=None,
        num_steps: int = 100,
        eta: float = 1.0,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ):
        self.conditional = (
            hasattr(unet.config, "cross_attention_dim") and unet.config.get("cross_attention_dim") is not None
        )
        if self.conditional and (text_encoder is None or tokenizer is None):
            raise ValueError(
                "A text-conditional UNet needs a text_encoder and a tokenizer "
                "(add text_encoder/ and tokenizer/ to the model folder)."
            )
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (unet.config.in_channels, height or size[0], width or size[1])
        super().__init__(
            unet,
            to_ddim(scheduler),
            shape,
            num_steps,
            eta,
            guidance_scale if self.conditional else 1.0,
            device,
            resolve_dtype(dtype),
        )
        self.text_encoder = None
        if self.conditional:
            self.text_encoder = text_encoder.to(device=self._device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.negative_prompt = negative_prompt
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, subfolders: dict[str, str] | None = None, **kwargs
    ) -> PixelUNetAdapter:
        """Loads a model folder with ``unet/``, ``scheduler/`` and optionally ``text_encoder/`` + ``tokenizer/``.

        Args:
            path: a local folder (or a hub id in the same layout).
            subfolders: override the subfolder names, e.g. ``{"unet": "ema_unet"}``.
            **kwargs: the constructor's keyword arguments (``num_steps``, ``eta``, ...).

        Raises:
            WeightsNotAvailableError: the folder or a required part of it is missing.
        """
        from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel

        names = {"unet": "unet", "scheduler": "scheduler", "text_encoder": "text_encoder", "tokenizer": "tokenizer"}
        names.update(subfolders or {})
        what = "pixel-space model"
        local = os.path.isdir(path)
        if local:
            for part in ("unet", "scheduler"):
                if not os.path.isdir(os.path.join(path, names[part])):
                    raise WeightsNotAvailableError(
                        f"The pixel-space model folder {str(path)!r} has no {names[part]}/ subfolder; "
                        "point the model path "
                        f"at a folder with unet/, scheduler/ (and text_encoder/, tokenizer/ for text conditioning)."
                    )
            unet_config = json.loads((Path(path) / names["unet"] / "config.json").read_text())
            unet_cls = UNet2DModel if unet_config.get("_class_name") == "UNet2DModel" else UNet2DConditionModel
        else:
            unet_cls = UNet2DConditionModel
        unet = load_pretrained(unet_cls.from_pretrained, path, what, subfolder=names["unet"])
        scheduler = load_pretrained(DDIMScheduler.from_pretrained, path, what, subfolder=names["scheduler"])
        text_encoder = tokenizer = None
        if unet.config.get("cross_attention_dim") is not None and isinstance(unet, UNet2DConditionModel):
            from transformers import CLIPTextModel, CLIPTokenizer

            text_encoder = load_pretrained(CLIPTextModel.from_pretrained, path, what, subfolder=names["text_encoder"])
            tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, path, what, subfolder=names["tokenizer"])
        dtype = resolve_dtype(kwargs.pop("dtype", torch.float32))
        return cls(unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer, dtype=dtype, **kwargs)

    # ---------------------------------------------------------------- protocol
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """`(B, L, D)` text embeddings (and their negatives with guidance); empty when unconditional."""
        if not self.conditional:
            return {}
        cond = {"prompt_embeds": self._embed(list(prompts))}
        if self.do_guidance:
            cond[NEGATIVE + "prompt_embeds"] = self._embed([self.negative_prompt]).expand(len(prompts), -1, -1)
        return cond

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            embeds = encode_with_clip(self.tokenizer, self.text_encoder, missing, self._device)
            self._cache.update(zip(missing, embeds.to(self.dtype)))
        return torch.stack([self._cache[p] for p in prompts])

    def _model_output(self, model_in: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.conditional:
            return self.unet(model_in, timestep, encoder_hidden_states=cond["prompt_embeds"]).sample
        return self.unet(model_in, timestep).sample

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] to images in [0, 1], `(N, C, H, W)`; keeps the graph."""
        return (x0 / 2 + 0.5).clamp(0, 1)
