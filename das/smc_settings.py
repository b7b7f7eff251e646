"""The SMC sampler's settings: one frozen object, checked once, built by hand or from a config section.

:class:`DASSettings` holds everything about *how* :class:`~das.smc.DASSampler` samples (α,
particles, resampling, tempering, selection, the proposal's gradient, memory and precision);
the model is the sampler's adapter and the reward is passed to every call. The application
layer builds it from a ``config.smc`` section (:func:`dasapp.factory.settings_from_config`);
``dataclasses.replace(settings, num_particles=1)`` gives a variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from das.proposals import GradientOptions
from das.resampling import get_resampler
from das.tempering import Schedule, tempering_class, tempering_from_options

SELECTIONS = ("max_weight", "sample", "all")
#: The dtypes of the opt-in ``autocast`` of the model passes.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DASSettings:
    """How DAS samples ``p_pre · exp(r/α)``.

    Args:
        kl_coeff: α, the KL weight of the target.
        num_particles: K particles per prompt.
        resampling: scheme name (see :mod:`das.resampling`).
        ess_threshold: resample a prompt when its ESS < ``ess_threshold · K``; in [0, 1].
        tempering: a schedule object (see :mod:`das.tempering`; any callable ``info -> λ``)
            or a schedule's name, built with its defaults (γ = 0.008 for ``"exponential"``,
            the resampling threshold, or 0.5 where that is 0, as ``"adaptive"``'s target).
        selection: ``"max_weight"`` (the paper), ``"sample"`` (one draw by weight) or ``"all"``.
        gradient: the proposal's gradient and its schedule (:class:`~das.proposals.GradientOptions`);
            the default ``"auto"`` takes the full gradient of a differentiable reward and none
            of another. The weights stay exact for each.
        max_chunk_rows: at most this many rows per model forward/backward, to bound memory;
            None processes all ``B·K`` rows at once.
        autocast: ``"bf16"`` or ``"fp16"`` runs the model passes (UNet, decode, reward) under
            ``torch.autocast`` in that dtype; particles and weights stay in the adapter's dtype
            and float32. None runs them as they are.
        progress: show a progress bar over denoising steps.

    Raises:
        ValueError: a setting is out of range or names nothing known.
    """

    kl_coeff: float
    num_particles: int = 4
    resampling: str = "ssp"
    ess_threshold: float = 0.5
    tempering: str | Schedule = "exponential"
    selection: str = "max_weight"
    gradient: GradientOptions = field(default_factory=GradientOptions)
    max_chunk_rows: int | None = None
    autocast: str | None = None
    progress: bool = False

    def __post_init__(self):
        if not self.kl_coeff > 0:
            raise ValueError(f"kl_coeff (α) must be positive, got {self.kl_coeff}.")
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {self.num_particles}.")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {self.ess_threshold}.")
        get_resampler(self.resampling)  # an unknown name raises, listing the valid ones
        if isinstance(self.tempering, str):
            tempering_class(self.tempering)
        elif not callable(self.tempering):
            raise ValueError(f"tempering must be a schedule name or a callable schedule, got {self.tempering!r}.")
        if self.selection not in SELECTIONS:
            raise ValueError(f"Unknown selection {self.selection!r}; choose one of: {', '.join(SELECTIONS)}.")
        if not isinstance(self.gradient, GradientOptions):
            raise ValueError(f"gradient must be a GradientOptions, got {self.gradient!r}.")
        if self.max_chunk_rows is not None and self.max_chunk_rows < 1:
            raise ValueError(f"max_chunk_rows must be at least 1 (None: no chunking), got {self.max_chunk_rows}.")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(
                f"Unknown autocast {self.autocast!r}; choose one of: {', '.join(AUTOCAST_DTYPES)} or None."
            )

    def schedule(self) -> Schedule:
        """The tempering schedule: `tempering` itself, or the named schedule with its defaults."""
        if not isinstance(self.tempering, str):
            return self.tempering
        target = self.ess_threshold if self.ess_threshold > 0 else 0.5  # adaptive tempering's ESS target
        return tempering_from_options(self.tempering, ess_threshold=target)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The torch dtype of `autocast`, or None."""
        return None if self.autocast is None else AUTOCAST_DTYPES[self.autocast]


__all__ = ["AUTOCAST_DTYPES", "SELECTIONS", "DASSettings"]
