"""Transitions computed by diffusers schedulers themselves.

Adapters call these with the model's output so that the mean, standard deviation and
Tweedie estimate are exactly what the pipeline's own scheduler step computes, never a
re-derivation.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from das.adapters.base import Transition


def ddim_previous_timestep(scheduler: DDIMScheduler, timestep: int) -> int:
    """The timestep a DDIM step from `timestep` lands on (negative past the end)."""
    return int(timestep) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def ddim_std(scheduler: DDIMScheduler, timestep: int, eta: float) -> float:
    """``σ_t(η)`` of DDIM (Song et al., 2021, eq. 16) from the scheduler's ``alphas_cumprod``."""
    prev = ddim_previous_timestep(scheduler, timestep)
    abar = float(scheduler.alphas_cumprod[int(timestep)])
    abar_prev = float(scheduler.alphas_cumprod[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
    variance = (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)
    return float(eta) * max(variance, 0.0) ** 0.5


def ddim_transition(
    scheduler: DDIMScheduler, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float
) -> Transition:
    """One DDIM transition, as ``scheduler.step`` computes it, split into mean and std.

    The mean is ``scheduler.step``'s output with zero variance noise; the std is the
    ``σ_t(η)`` that step would multiply its noise by.

    Args:
        scheduler: a ``DDIMScheduler`` after ``set_timesteps``.
        model_output: the (guided) model prediction at `sample`, same shape.
        timestep: the current timestep (an element of ``scheduler.timesteps``).
        sample: ``x_t``, `(N, ...)`.
        eta: DDIM stochasticity.
    """
    noise = torch.zeros_like(sample) if eta > 0 else None
    out = scheduler.step(model_output, timestep, sample, eta=eta, variance_noise=noise, return_dict=True)
    std = torch.tensor(ddim_std(scheduler, timestep, eta), device=sample.device, dtype=sample.dtype)
    return Transition(x0_hat=out.pred_original_sample, mean=out.prev_sample, std=std)
