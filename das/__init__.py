"""DAS: Diffusion Alignment as Sampling.

Sequential Monte Carlo over a diffusion model's denoising chain, sampling
``p_pre(x) · exp(r(x)/α)`` without fine-tuning. The sampler (:class:`DASSampler`) drives
any model through the small :class:`~das.adapters.DenoiserAdapter` seam with frozen
:class:`DASSettings` and takes any :class:`~das.rewards.Reward` per call.
"""

from das.proposals import GradientOptions
from das.smc import DASSampler, SMCResult
from das.smc_settings import DASSettings

__all__ = ["DASSampler", "DASSettings", "GradientOptions", "SMCResult"]
