"""Fixed-seed DAS runs whose outputs are kept in ``tests/fixtures/das_reference/`` (the sampler's regression record).

Each case is a model (the nine-Gaussian toy of :mod:`das.toy` or the tiny Stable Diffusion
components of :mod:`tests.tiny_components`), a reward, the sampler's options and a seed,
chosen so that resampling, tempering and every proposal gradient are exercised.
``test_reference.py`` asserts that today's sampler reproduces the recorded tensors bit for
bit. The file was written by this module's ``__main__`` before the sampler's settings and
``init``/``step``/``finish`` redesign::

    .venv/bin/python -m tests.das.das_reference   # rewrites the file: only for an intended change of results
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "das_reference" / "das_reference.safetensors"
FIELDS = ("samples", "images", "rewards", "log_weights", "log_normalizer", "selected_index", "selected")
TRACE_FIELDS = ("ess", "lam", "resampled", "reward", "degenerate_steps")


@dataclass(frozen=True)
class Case:
    """One recorded run: `model` (``"toy"`` or ``"sd"``), the sampler's `options`, prompts and seed."""

    model: str
    options: dict = field(default_factory=dict)
    proposal: bool = False  # a realigned proposal adapter over the toy
    seed: int = 0


TOY = dict(kl_coeff=0.7, num_particles=6)
SD = dict(kl_coeff=0.01, num_particles=3)
CASES = {
    "toy_full_exponential": Case(
        "toy", dict(TOY, ess_threshold=0.8, tempering_gamma=0.3, selection="sample", gradient="full"), seed=1
    ),
    "toy_jacobian_free_adaptive": Case(
        "toy",
        dict(
            TOY,
            gradient="jacobian_free",
            gradient_every=2,
            gradient_after=0.5,
            gradient_reuse=True,
            tempering="adaptive",
            ess_threshold=0.6,
            resampling="systematic",
        ),
        seed=2,
    ),
    "toy_full_grad_norm_ratio": Case(
        "toy",
        dict(
            TOY,
            gradient="full",
            gradient_after=0.3,
            tempering="grad_norm_ratio",
            tempering_start=2,
            max_chunk_rows=7,
            selection="all",
            ess_threshold=0.9,
        ),
        seed=3,
    ),
    "toy_none_polynomial": Case(
        "toy", dict(TOY, gradient="none", tempering="polynomial", resampling="multinomial", ess_threshold=0.9), seed=4
    ),
    "toy_realigned_proposal": Case(
        "toy", dict(TOY, gradient="full", tempering_gamma=0.3, ess_threshold=0.8), proposal=True, seed=5
    ),
    "sd_full_always_resample": Case(
        "sd", dict(SD, gradient="full", ess_threshold=1.0, tempering_gamma=0.5, selection="sample"), seed=6
    ),
    "sd_jacobian_free_adaptive": Case(
        "sd", dict(SD, gradient="jacobian_free", tempering="adaptive", ess_threshold=0.9, max_chunk_rows=4), seed=7
    ),
}


def toy_model(proposal: bool):
    """The nine-Gaussian toy over 10 steps with the paper's reward; with `proposal`, a realigned proposal adapter."""
    from das.adapters.realigned import RealignedAdapter
    from das.toy import nine_gaussians, paper_toy_reward, tilt_quadratic
    from das.toy.adapter import ToyAdapter

    adapter = ToyAdapter(nine_gaussians(), num_steps=10)
    other = ToyAdapter(tilt_quadratic(nine_gaussians(), paper_toy_reward(), 1.0)[0], num_steps=10)
    return adapter, paper_toy_reward(), RealignedAdapter(adapter, other, 0.5) if proposal else None


def sd_model():
    """The tiny Stable Diffusion components over 4 DDIM steps, CFG 5, with a brightness reward."""
    from das.adapters.stable_diffusion import StableDiffusionAdapter
    from das.rewards import FunctionReward
    from tests.tiny_components import tiny_sd_pipeline

    adapter = StableDiffusionAdapter(tiny_sd_pipeline(), num_steps=4, guidance_scale=5.0)
    reward = FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")
    return adapter, reward, None


PROMPTS = {"toy": ["a", "b", "c"], "sd": ["a cat", "a red dog"]}


def settings_of(options: dict):
    """:class:`~das.smc.DASSettings` from options named as a config's ``smc`` fields (``tempering_gamma``,
    ``gradient_every`` ...), with the same defaults; the other keys are settings fields."""
    from das.proposals import GradientOptions
    from das.smc import DASSettings
    from das.tempering import tempering_from_options

    options = dict(options)
    gradient = GradientOptions(
        options.pop("gradient", "auto"),
        every=options.pop("gradient_every", 1),
        after=options.pop("gradient_after", 0.0),
        reuse=options.pop("gradient_reuse", False),
    )
    ess_threshold = options.get("ess_threshold", 0.5)
    tempering = tempering_from_options(
        options.pop("tempering", "exponential"),
        start=options.pop("tempering_start", 0),
        gamma=options.pop("tempering_gamma", 0.008),
        ess_threshold=ess_threshold,
    )
    return DASSettings(tempering=tempering, gradient=gradient, **options)


def run_case(case: Case, model=None):
    """The :class:`~das.smc.SMCResult` of one case (`model`: its ``(adapter, reward, proposal)``, built if None)."""
    from das.smc import DASSampler

    adapter, reward, proposal = model or (toy_model(case.proposal) if case.model == "toy" else sd_model())
    sampler = DASSampler(adapter, settings_of(case.options), proposal_adapter=proposal)
    return sampler.sample(PROMPTS[case.model], reward, torch.Generator().manual_seed(case.seed))


def flatten(name: str, result) -> dict[str, torch.Tensor]:
    """The tensors of a result kept in the fixture, keyed ``<case>/<field>``."""
    out = {f"{name}/{key}": getattr(result, key) for key in FIELDS}
    out.update({f"{name}/trace.{key}": getattr(result.trace, key) for key in TRACE_FIELDS})
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


def main() -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, case in CASES.items():
        tensors.update(flatten(name, run_case(case)))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURE), metadata={"torch": torch.__version__})
    print(f"Wrote {len(tensors)} tensors of {len(CASES)} cases to {FIXTURE}.")


if __name__ == "__main__":
    main()
