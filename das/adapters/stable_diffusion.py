"""Adapters over diffusers' Stable Diffusion (1.x/2.x) and SDXL pipelines, in latent space.

Prompts are encoded by the pipeline's own ``encode_prompt`` (once per distinct prompt,
then cached); the UNet is called exactly as the pipeline's denoising loop calls it, with
classifier-free guidance in one doubled ``[negative; positive]`` batch; the transition is
the chain's ``DDIMScheduler.step`` (coefficients from the pipeline's scheduler config).
Images are ``(vae.decode(x / scaling_factor).sample / 2 + 0.5).clamp(0, 1)`` with the graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from das.adapters.base import Conditioning
from das.adapters.common import NEGATIVE, DiffusersAdapter, resolve_dtype, to_ddim
from das.adapters.loading import load_pretrained


class _LatentPipelineAdapter(DiffusersAdapter):
    """Shared by the latent-space pipeline adapters: VAE decoding, sizes, prompt cache."""

    pipeline_name = "diffusion pipeline"

    def __init__(
        self, pipeline, scheduler, num_steps, eta, guidance_scale, negative_prompt, height, width, device, dtype
    ):
        dtype = resolve_dtype(dtype)
        pipeline.to(device=torch.device(device), dtype=dtype)
        for module in (getattr(pipeline, name, None) for name in ("vae", "text_encoder", "text_encoder_2")):
            if module is not None:
                module.eval().requires_grad_(False)
        self.pipeline = pipeline
        self.vae = pipeline.vae
        vae_scale = pipeline.vae_scale_factor
        unet = pipeline.unet
        height = height or unet.config.sample_size * vae_scale
        width = width or unet.config.sample_size * vae_scale
        if height % vae_scale or width % vae_scale:
            raise ValueError(
                f"height and width must be multiples of the VAE scale factor {vae_scale}, got {height}×{width}."
            )
        self.height, self.width = int(height), int(width)
        shape = (unet.config.in_channels, height // vae_scale, width // vae_scale)
        super().__init__(unet, scheduler, shape, num_steps, eta, guidance_scale, device, dtype)
        self.negative_prompt = negative_prompt
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._negative: dict[str, torch.Tensor] | None = None

    #: The diffusers pipeline class a subclass loads (its name in ``diffusers``), and the
    #: keyword arguments it is loaded with (e.g. no safety checker).
    pipeline_class = ""
    pipeline_kwargs: dict = {}

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | os.PathLike, dtype: torch.dtype | str = torch.float32, **kwargs):
        """Loads the subclass's :attr:`pipeline_class` from a hub id or a local folder, offline first.

        Raises:
            WeightsNotAvailableError: the weights are neither cached nor reachable.
        """
        import diffusers

        pipeline = load_pretrained(
            getattr(diffusers, cls.pipeline_class).from_pretrained,
            model_id_or_path,
            cls.pipeline_name,
            torch_dtype=resolve_dtype(dtype),
            **cls.pipeline_kwargs,
        )
        return cls(pipeline, dtype=dtype, **kwargs)

    # ---------------------------------------------------------------- prompts
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Per-prompt embeddings from the pipeline's ``encode_prompt``, cached by prompt string.

        Returns:
            A dict with ``B`` rows per tensor, plus ``negative_*`` twins when guidance is on.
        """
        prompts = list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing or (self.do_guidance and self._negative is None):
            positive, negative = self._encode(missing or prompts[:1])
            for i, prompt in enumerate(missing):
                self._cache[prompt] = {key: value[i] for key, value in positive.items()}
            if self._negative is None and negative is not None:
                self._negative = {key: value[0] for key, value in negative.items()}
        cond = {key: torch.stack([self._cache[p][key] for p in prompts]) for key in self._cache[prompts[0]]}
        if self.do_guidance:
            for key, value in self._negative.items():
                cond[NEGATIVE + key] = value.unsqueeze(0).expand(len(prompts), *value.shape)
        return cond

    def _encode(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        raise NotImplementedError

    # ---------------------------------------------------------------- decoding
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents `(N, 4, h, w)` to images in [0, 1], `(N, 3, H, W)`, through the VAE; keeps the graph."""
        config = self.vae.config
        latents = x0.to(self.vae.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        return (self.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)


class _DDIMPipelineAdapter(_LatentPipelineAdapter):
    """A latent pipeline stepped by DDIM (built from the pipeline's own scheduler config)."""

    def __init__(
        self,
        pipeline,
        num_steps: int = 100,
        eta: float = 1.0,
        guidance_scale: float = 5.0,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ):
        super().__init__(
            pipeline,
            to_ddim(pipeline.scheduler),
            num_steps,
            eta,
            guidance_scale,
            negative_prompt,
            height,
            width,
            device,
            dtype,
        )


class StableDiffusionAdapter(_DDIMPipelineAdapter):
    """Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``) as a DAS adapter.

    Args:
        pipeline: a ``StableDiffusionPipeline``; its scheduler's config defines the DDIM chain.
        num_steps: DDIM steps (100 in the paper).
        eta: DDIM stochasticity (1 by default; 0 reproduces the pipeline with ``eta=0``).
        guidance_scale: CFG weight (5 in the paper); ``<= 1`` turns guidance off.
        negative_prompt: the unconditional branch's text; None is the empty prompt.
        height: image height; defaults to ``unet.config.sample_size × vae_scale_factor``.
        width: image width; same default.
        device: where everything runs.
        dtype: fp32, fp16 or bf16 (``torch.dtype`` or name).
    """

    pipeline_name = "Stable Diffusion pipeline"
    pipeline_class = "StableDiffusionPipeline"
    pipeline_kwargs = {"safety_checker": None, "requires_safety_checker": False}

    def _encode(self, prompts):
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(prompts)
        with torch.no_grad():
            embeds, negative_embeds = self.pipeline.encode_prompt(
                prompts, self._device, 1, self.do_guidance, negative_prompt=negative
            )
        return {"prompt_embeds": embeds}, (None if negative_embeds is None else {"prompt_embeds": negative_embeds})

    def _model_output(self, model_in, timestep, cond):
        return self.unet(model_in, timestep, encoder_hidden_states=cond["prompt_embeds"]).sample


class StableDiffusionXLAdapter(_DDIMPipelineAdapter):
    """SDXL (``StableDiffusionXLPipeline``): two text encoders, pooled embeddings and time ids.

    Latents default to ``unet.config.sample_size`` (128 for SDXL base, i.e. 1024×1024 images).

    Args:
        pipeline: a ``StableDiffusionXLPipeline``.
        num_steps: DDIM steps.
        eta: DDIM stochasticity.
        guidance_scale: CFG weight; ``<= 1`` turns guidance off.
        negative_prompt: the unconditional branch's text; None follows the pipeline
            (zeros when its ``force_zeros_for_empty_prompt`` is set).
        height: image height; defaults to ``unet.config.sample_size × vae_scale_factor``.
        width: image width; same default.
        device: where everything runs.
        dtype: fp32, fp16 or bf16.
    """

    pipeline_name = "Stable Diffusion XL pipeline"
    pipeline_class = "StableDiffusionXLPipeline"
    pipeline_kwargs = {"add_watermarker": False}

    def _time_ids(self, pooled: torch.Tensor) -> torch.Tensor:
        pipe = self.pipeline
        projection_dim = (
            int(pooled.shape[-1]) if pipe.text_encoder_2 is None else pipe.text_encoder_2.config.projection_dim
        )
        size = (self.height, self.width)
        ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=pooled.dtype, text_encoder_projection_dim=projection_dim
        )
        return ids.to(self._device).expand(pooled.shape[0], -1)

    def _encode(self, prompts):
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(prompts)
        with torch.no_grad():
            embeds, negative_embeds, pooled, negative_pooled = self.pipeline.encode_prompt(
                prompts,
                device=self._device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.do_guidance,
                negative_prompt=negative,
            )
        positive = {"prompt_embeds": embeds, "text_embeds": pooled, "time_ids": self._time_ids(pooled)}
        if negative_embeds is None:
            return positive, None
        return positive, {
            "prompt_embeds": negative_embeds,
            "text_embeds": negative_pooled,
            "time_ids": self._time_ids(negative_pooled),
        }

    def _model_output(self, model_in, timestep, cond):
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return self.unet(
            model_in, timestep, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs=added
        ).sample
