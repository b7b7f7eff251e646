"""Adapter for analytic Gaussian-mixture models: an exact-score diffusion model.

The chain is DDIM with parameter ``eta`` (1 is the DDPM-like ancestral sampler), stepped
by a diffusers :class:`~diffusers.DDIMScheduler` (linear betas, 1000 training steps by
default), with the mixture's exact noise prediction in place of a network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler

from das.adapters.base import Conditioning, Transition
from das.adapters.scheduling import ddim_transition
from das.toy.mixtures import GaussianMixture


class ToyAdapter:
    """DDIM chain over a :class:`GaussianMixture` prior with exact scores.

    Args:
        prior: the data distribution.
        num_steps: denoising transitions.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like).
        scheduler: a ``DDIMScheduler`` whose coefficients define the chain; by default one
            with 1000 linear-beta training steps and ``set_alpha_to_one=True``.
        device: where particles live.
        dtype: particle dtype.
    """

    def __init__(
        self,
        prior: GaussianMixture,
        num_steps: int = 100,
        eta: float = 1.0,
        scheduler: DDIMScheduler | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.scheduler = scheduler or DDIMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True
        )
        self.scheduler.set_timesteps(num_steps)
        self.prior = prior.to(device=device, dtype=dtype)
        self.eta = float(eta)
        self._device = torch.device(device)
        self.dtype = dtype
        self._timesteps = [int(t) for t in self.scheduler.timesteps]

    @property
    def num_steps(self) -> int:
        return len(self._timesteps)

    @property
    def device(self) -> torch.device:
        return self._device

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        return {}

    def initial_noise(self, num_rows: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(num_rows, self.prior.dim, generator=generator, device=self._device, dtype=self.dtype)

    @property
    def timesteps(self) -> list[int]:
        """The scheduler's timesteps, one per chain step."""
        return list(self._timesteps)

    @property
    def prediction_type(self) -> str:
        """What :meth:`model_output` predicts: always the noise (``"epsilon"``)."""
        return "epsilon"

    def model_output(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> torch.Tensor:
        """The mixture's exact noise prediction ``ε(x_t)`` at chain step `step`, `(N, d)`."""
        timestep = self._timesteps[step]
        return self.prior.noise_prediction(x_t, float(self.scheduler.alphas_cumprod[timestep]))

    def transition_from_output(self, model_output: torch.Tensor, step: int, x_t: torch.Tensor) -> Transition:
        """The DDIM transition that ``scheduler.step`` computes from `model_output` at `x_t`."""
        return ddim_transition(self.scheduler, model_output, self._timesteps[step], x_t, self.eta)

    def transition(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> Transition:
        return self.transition_from_output(self.model_output(x_t, step, cond), step, x_t)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0
