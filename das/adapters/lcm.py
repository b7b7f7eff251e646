"""Adapter over diffusers' ``LatentConsistencyModelPipeline``: few-step LCM chains.

LCM's step maps ``x_t`` to the consistency estimate ``denoised`` (the chain's ``x̂0``) and
re-noises it to the next timestep: ``x_{prev} = sqrt(ᾱ_prev)·denoised + sqrt(1 − ᾱ_prev)·z``
(no noise at the last step). The transition's mean and std are read off
``LCMScheduler.step`` itself: ``denoised`` comes from the step, and ``ᾱ_prev`` is looked up
exactly as the step looks it up. Guidance is LCM's guidance embedding (``timestep_cond``),
so the UNet runs one batch, not a doubled one.
"""

from __future__ import annotations

import torch

from das.adapters.base import Transition
from das.adapters.stable_diffusion import _LatentPipelineAdapter


def lcm_transition(scheduler, model_output: torch.Tensor, step_index: int, sample: torch.Tensor) -> Transition:
    """One ``LCMScheduler.step`` split into mean and std.

    Args:
        scheduler: an ``LCMScheduler`` after ``set_timesteps``.
        model_output: the UNet prediction at `sample`.
        step_index: index of the current timestep in ``scheduler.timesteps``.
        sample: ``x_t``, `(N, ...)`.

    Returns:
        ``x0_hat = denoised``, ``mean = sqrt(ᾱ_prev)·denoised`` (``denoised`` at the last step)
        and ``std = sqrt(1 − ᾱ_prev)`` (0 at the last step), so that the step's
        ``prev_sample`` is ``mean + std · z`` for its noise ``z``.
    """
    timestep = scheduler.timesteps[step_index]
    scheduler._step_index = step_index  # the step is stateful; chunks and resampling call it out of order
    last = step_index == scheduler.num_inference_steps - 1
    # The step's own noise is discarded (mean and std are what it adds it to).
    generator = None if last else torch.Generator(device=sample.device).manual_seed(0)
    denoised = scheduler.step(model_output, timestep, sample, generator=generator, return_dict=True).denoised
    if last:
        return Transition(
            x0_hat=denoised, mean=denoised, std=torch.zeros((), device=sample.device, dtype=sample.dtype)
        )
    prev_timestep = scheduler.timesteps[step_index + 1]
    alpha_prev = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    mean = alpha_prev.sqrt() * denoised
    std = (1 - alpha_prev).sqrt().to(device=sample.device, dtype=sample.dtype)
    return Transition(x0_hat=denoised, mean=mean.to(sample.dtype), std=std)


class LCMAdapter(_LatentPipelineAdapter):
    """Latent Consistency Model (``LatentConsistencyModelPipeline``) as a DAS adapter.

    Args:
        pipeline: a ``LatentConsistencyModelPipeline`` (its ``LCMScheduler`` config is used).
        num_steps: LCM steps (4–8 typical).
        guidance_scale: LCM's embedded guidance ``w`` (8.5 is the pipeline's default).
        height: image height; defaults to ``unet.config.sample_size × vae_scale_factor``.
        width: image width; same default.
        device: where everything runs.
        dtype: fp32, fp16 or bf16.
    """

    pipeline_name = "Latent Consistency Model pipeline"
    pipeline_class = "LatentConsistencyModelPipeline"
    pipeline_kwargs = {"safety_checker": None, "requires_safety_checker": False}
    uses_doubled_guidance = False

    def __init__(
        self,
        pipeline,
        num_steps: int = 4,
        guidance_scale: float = 8.5,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ):
        from diffusers import LCMScheduler

        scheduler = LCMScheduler.from_config(pipeline.scheduler.config)
        super().__init__(pipeline, scheduler, num_steps, 1.0, guidance_scale, None, height, width, device, dtype)

    def _encode(self, prompts):
        with torch.no_grad():
            embeds, _ = self.pipeline.encode_prompt(prompts, self._device, 1, False)
        positive = {"prompt_embeds": embeds}
        dim = self.unet.config.time_cond_proj_dim
        if dim is not None:
            w = torch.tensor(self.guidance_scale - 1).repeat(len(prompts))
            positive["timestep_cond"] = self.pipeline.get_guidance_scale_embedding(w, embedding_dim=dim).to(
                device=self._device, dtype=embeds.dtype
            )
        return positive, None

    def _model_output(self, model_in, timestep, cond):
        return self.unet(
            model_in, timestep, timestep_cond=cond.get("timestep_cond"), encoder_hidden_states=cond["prompt_embeds"]
        ).sample

    def _step(self, model_output, step, x_t):
        return lcm_transition(self.scheduler, model_output, step, x_t)
