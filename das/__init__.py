"""DAS: Diffusion Alignment as Sampling.

Sequential Monte Carlo over a diffusion model's denoising chain, sampling
``p_pre(x) · exp(r(x)/α)`` without fine-tuning. The sampler (:class:`DASSampler`) drives
any model through the small :class:`~das.adapters.DenoiserAdapter` seam and takes any
:class:`~das.rewards.Reward`.
"""

from das.smc import DASSampler, SMCResult

__all__ = ["DASSampler", "SMCResult"]
