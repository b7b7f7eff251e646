"""The denoiser-adapter seam: what the SMC core needs from a diffusion model.

An adapter wraps one model family (an analytic toy, a pixel-space UNet, Stable Diffusion,
SDXL, LCM). The SMC core only ever calls the methods below, so every family is sampled by
the same code.

Conditioning is a plain ``dict[str, torch.Tensor]`` whose tensors all have one row per
prompt (leading dimension ``B``). The SMC core repeats every row ``K`` times for the
particles and slices rows for memory-bounded chunks, so an adapter never needs to know
about particles or chunking. Unconditional models return an empty dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

Conditioning = dict[str, torch.Tensor]


@dataclass
class Transition:
    """The pretrained transition ``p_pre(x_{t-1} | x_t)`` at one step, for a batch of rows.

    Attributes:
        x0_hat: Tweedie's estimate of the clean sample, shape `(N, *event_shape)`. Keeps the
            autograd graph to ``x_t`` when ``x_t`` requires grad.
        mean: mean of the Gaussian transition, shape `(N, *event_shape)`.
        std: its standard deviation, a tensor broadcastable to `mean` (a scalar tensor for
            schedulers whose variance depends only on the step). Zero for deterministic
            (eta = 0) steps.
    """

    x0_hat: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


@runtime_checkable
class DenoiserAdapter(Protocol):
    """What the SMC core needs from a diffusion model, and nothing more."""

    @property
    def num_steps(self) -> int:
        """Number of denoising transitions in the chain."""

    @property
    def device(self) -> torch.device:
        """Device on which the adapter's tensors live."""

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Encodes prompts once per sampler call.

        Args:
            prompts: ``B`` prompt strings (ignored by unconditional models).

        Returns:
            A dict of tensors with leading dimension ``B``.
        """

    def initial_noise(self, num_rows: int, generator: torch.Generator) -> torch.Tensor:
        """Draws ``x_T`` for `num_rows` particles, shape `(num_rows, *event_shape)`."""

    def transition(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> Transition:
        """Pretrained transition from ``x_t`` at chain step `step` (0 is the noisiest).

        Args:
            x_t: current particles, shape `(N, *event_shape)`.
            step: index into the chain, ``0 <= step < num_steps``.
            cond: conditioning with ``N`` rows.
        """

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Maps clean samples (or Tweedie estimates) to images in [0, 1], `(N, C, H, W)`.

        For non-image models (the analytic toys) this is the identity on `(N, d)` vectors.
        Must keep the autograd graph.
        """


@runtime_checkable
class ModelOutputAdapter(DenoiserAdapter, Protocol):
    """An adapter whose transition is "model output, then the scheduler's step", split in two.

    ``transition(x, step, cond)`` equals
    ``transition_from_output(model_output(x, step, cond), step, x)``. The split lets a
    wrapper combine the outputs of two models before the step (DeRaDiff's realignment,
    :class:`~das.adapters.realigned.RealignedAdapter`). Every adapter of this package
    implements it.
    """

    @property
    def prediction_type(self) -> str:
        """What the model output is: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``."""

    def model_output(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> torch.Tensor:
        """The (guided) model prediction at `x_t`, `(N, *event_shape)`."""

    def transition_from_output(self, model_output: torch.Tensor, step: int, x_t: torch.Tensor) -> Transition:
        """The transition the adapter's scheduler step computes from `model_output` at `x_t`."""
