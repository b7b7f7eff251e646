"""DeRaDiff: denoising-time realignment of an aligned model to another KL strength.

Given a reference model ``p_ref`` and a model ``p_al`` aligned to ``p_ref · exp(r/α)``,
DeRaDiff (arXiv 2601.20198) samples each reverse step from the geometric mixture

    p_λ(x_{t−1} | x_t) ∝ p_ref(x_{t−1} | x_t)^{1−λ} · p_al(x_{t−1} | x_t)^λ.

With one scheduler both transitions are Gaussians ``N(μ, σ_t²)`` of the same variance, and
the mixture is the Gaussian ``N((1−λ) μ_ref + λ μ_al, σ_t²)``. The scheduler's mean (DDIM,
and LCM's re-noised consistency estimate) is affine in the model output for a fixed
``x_t``, so the mixed mean is the scheduler step applied to the mixed output; for
ε-prediction ``ε_λ = (1 − λ) ε_ref + λ ε_al``, and likewise for v- or x0-prediction (both
models must predict the same thing). The chain emulates the model aligned at strength
``α/λ``: since ``ε_al − ε_ref = −sqrt(1 − ᾱ_t) ∇ log E_ref[exp(r/α) | x_t]``, the mix uses
``λ ∇ log E_ref[exp(r/α) | x_t]`` where the model aligned at ``α/λ`` has
``∇ log E_ref[exp(λ r/α) | x_t]``. The two agree at ``t → 0`` and whenever that score is
linear in ``1/α`` (a Gaussian prior and a linear reward); otherwise the chain is an
approximation, which SMC can correct (below). λ > 1 extrapolates. The realigned model costs
two model calls per step (one at λ ∈ {0, 1}). On the exact toys (``benchmarks/bench_realign.py``)
λ = 2 measured 0.9–1.9× the EMD floor and λ < 1 1.7–3×: weakening a tilt that moved mass
between well-separated modes is where the approximation is worst.

DAS on top of a realigned model. :class:`~das.smc.DASSampler` targets
``p_base · exp(r/α_das)``, where ``p_base`` is the chain of the adapter it is given. With the
realigned adapter as ``p_base ≈ p_ref · exp(λ r/α)``, the reward at strength ``α/λ``
(``α_das = α/λ``) would tilt twice and target ≈ ``p_ref · exp(2λ r/α)``, strength ``α/(2λ)``.
Two correct compositions for the target ``p_ref · exp(r/α')`` with ``α' = α/λ``:

* split the tilt: realign with ``λ_b < λ`` and
  run DAS with ``α_das = α/(λ − λ_b)``, so ``λ_b/α + 1/α_das = 1/α'`` (for ``λ_b > λ``,
  the negated reward at ``α/(λ_b − λ)``). The residual tilt is
  handled by SMC exactly relative to the realigned chain, so the result carries the
  realigned chain's approximation error at ``λ_b`` (none at ``λ_b = 1``, where the chain is
  the aligned model itself; for the toys that is the exact tilt at ``α``).
* exact (the issue's bar): SMC whose *target path* is the reference chain twisted by
  ``r/α'``, with the realigned transition as its *proposal*:
  ``DASSampler(reference, DASSettings(kl_coeff=α/λ), proposal_adapter=RealignedAdapter(reference,
  aligned, λ))``. The incremental log-weight is
  ``log p_ref(x_{t−1}|x_t) − log p_λ(x_{t−1}|x_t) + ψ_{t−1} − ψ_t``, which for the equal
  variances here is ``(‖ε‖² − ‖z + (μ_λ − μ_ref)/σ_t‖²)/2`` for the draw
  ``x = μ_λ + σ_t z``, ``z = ε`` plus DAS's gradient shift ``σ_t λ_{t−1} ∇r/α'`` if used
  (at ``σ_t = 0`` the particle takes ``μ_ref``). The realigned chain already carries the
  tilt, so ``gradient=GradientOptions("none"), tempering="none"`` is the natural setting; it measured
  0.83–1.00× the EMD floor for every λ ∈ {0.25, 0.5, 1, 2} on both toys
  (``benchmarks/results/realign.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from das.adapters.base import Conditioning, DenoiserAdapter, ModelOutputAdapter, Transition

REFERENCE = "reference."
ALIGNED = "aligned."

# Scheduler settings that change what a step computes from a model output (besides the
# noise schedule, timesteps and prediction type, which are compared separately).
_STEP_SETTINGS = (
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "timestep_scaling",
)


class RealignedAdapter:
    """DeRaDiff's realigned chain: the reverse step of ``p_ref^{1−λ} · p_aligned^λ``.

    Both sides are adapters of this package (toy, pixel, SD, SDXL, LCM, or another
    realigned adapter) with the same scheduler, prediction type, chain and latent shape.
    The transition is the reference scheduler's step on the mixed model output
    ``(1 − λ)·out_ref + λ·out_aligned``. At λ = 0 the adapter *is* the reference and at
    λ = 1 the aligned model (only that side runs and is used throughout, so the chains are
    reproduced bit for bit); otherwise the reference supplies the step, initial noise and
    decoder, so the two models should share their decoder (a VAE), as a fine-tune does.

    Conditioning: each side encodes the prompts with its own encoders; the dict holds both
    under the prefixes ``"reference."`` and ``"aligned."`` (every tensor keeps its leading
    dimension ``B``).

    Args:
        reference: the pretrained model's adapter.
        aligned: the adapter of the model aligned at strength α.
        lam: λ ≥ 0; the chain emulates strength ``α/λ`` (λ > 1 extrapolates).

    Raises:
        ValueError: λ is negative or not finite, or the two models do not match.
    """

    def __init__(self, reference: ModelOutputAdapter, aligned: ModelOutputAdapter, lam: float):
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam (λ) must be a finite number ≥ 0, got {lam}.")
        check_realignable(reference, aligned)
        self.reference = reference
        self.aligned = aligned
        self.lam = lam
        self._lead = aligned if lam == 1.0 else reference

    # ---------------------------------------------------------------- protocol
    @property
    def num_steps(self) -> int:
        return self._lead.num_steps

    @property
    def device(self) -> torch.device:
        return self._lead.device

    @property
    def timesteps(self) -> list[int]:
        """The shared chain's timesteps."""
        return list(self._lead.timesteps)

    @property
    def scheduler(self):
        """The scheduler that steps the mixed output (the reference's; the aligned model's at λ = 1)."""
        return self._lead.scheduler

    @property
    def eta(self) -> float | None:
        return getattr(self._lead, "eta", None)

    @property
    def prediction_type(self) -> str:
        return self._lead.prediction_type

    def _uses(self) -> tuple[bool, bool]:
        """Whether the reference and the aligned model run at all (not at λ = 1 and λ = 0 respectively)."""
        return self.lam != 1.0, self.lam != 0.0

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Both sides' conditioning, keys prefixed ``"reference."`` / ``"aligned."``, `B` rows each."""
        uses_reference, uses_aligned = self._uses()
        cond: Conditioning = {}
        if uses_reference:
            cond.update({REFERENCE + key: value for key, value in self.reference.encode_prompts(prompts).items()})
        if uses_aligned:
            cond.update({ALIGNED + key: value for key, value in self.aligned.encode_prompts(prompts).items()})
        return cond

    def initial_noise(self, num_rows: int, generator: torch.Generator) -> torch.Tensor:
        return self._lead.initial_noise(num_rows, generator)

    def model_output(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> torch.Tensor:
        """The mixed output ``(1 − λ)·out_ref + λ·out_aligned`` at `x_t`, `(N, *event_shape)`."""
        uses_reference, uses_aligned = self._uses()
        if not uses_aligned:
            return self.reference.model_output(x_t, step, _side(cond, REFERENCE))
        if not uses_reference:
            return self.aligned.model_output(x_t, step, _side(cond, ALIGNED))
        out_ref = self.reference.model_output(x_t, step, _side(cond, REFERENCE))
        out_aligned = self.aligned.model_output(x_t, step, _side(cond, ALIGNED))
        return torch.lerp(out_ref, out_aligned.to(out_ref.dtype), self.lam)

    def transition_from_output(self, model_output: torch.Tensor, step: int, x_t: torch.Tensor) -> Transition:
        return self._lead.transition_from_output(model_output, step, x_t)

    def transition(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> Transition:
        """The realigned transition: the scheduler step on the mixed output (keeps the graph to `x_t`)."""
        return self.transition_from_output(self.model_output(x_t, step, cond), step, x_t)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self._lead.decode(x0)


def _side(cond: Conditioning, prefix: str) -> Conditioning:
    return {key[len(prefix) :]: value for key, value in cond.items() if key.startswith(prefix)}


def _event(adapter: DenoiserAdapter) -> torch.Tensor:
    """One initial-noise row: its shape, dtype and device are the adapter's particle format."""
    return adapter.initial_noise(1, torch.Generator(device=adapter.device).manual_seed(0))


def _as_cpu(value) -> torch.Tensor:
    return torch.as_tensor(value).detach().to("cpu", torch.float64)


def check_realignable(reference: DenoiserAdapter, aligned: DenoiserAdapter) -> None:
    """Raises one clear ``ValueError`` (``TypeError`` for a non-adapter) unless the adapters can be mixed step by step.

    They must expose the output/step split (:class:`ModelOutputAdapter`) and agree on the
    chain (steps, timesteps), the scheduler (class, noise schedule, step settings, η), the
    prediction type, and the particles' shape, dtype and device.
    """
    for name, adapter in (("reference", reference), ("aligned", aligned)):
        if not isinstance(adapter, ModelOutputAdapter):
            raise TypeError(
                f"The {name} adapter ({type(adapter).__name__}) has no model_output/transition_from_output "
                f"split, so it cannot be realigned; use an adapter of das.adapters."
            )
    diffs: list[str] = []

    def compare(what: str, ref_value, aligned_value, equal=None) -> None:
        same = equal(ref_value, aligned_value) if equal is not None else ref_value == aligned_value
        if not same:
            diffs.append(f"{what} (reference {_show(ref_value)}, aligned {_show(aligned_value)})")

    compare("prediction type", reference.prediction_type, aligned.prediction_type)
    ref_sched, al_sched = getattr(reference, "scheduler", None), getattr(aligned, "scheduler", None)
    compare("scheduler class", type(ref_sched).__name__, type(al_sched).__name__)
    compare("number of steps", reference.num_steps, aligned.num_steps)
    if reference.num_steps == aligned.num_steps:
        compare("timesteps", list(getattr(reference, "timesteps", [])), list(getattr(aligned, "timesteps", [])))
    for attribute in ("alphas_cumprod", "final_alpha_cumprod", "init_noise_sigma"):
        ref_value, al_value = getattr(ref_sched, attribute, None), getattr(al_sched, attribute, None)
        if ref_value is None and al_value is None:
            continue
        compare(f"scheduler {attribute}", ref_value, al_value, _same_tensor)
    ref_config = dict(getattr(ref_sched, "config", {}) or {})
    al_config = dict(getattr(al_sched, "config", {}) or {})
    for key in _STEP_SETTINGS:
        if key in ref_config or key in al_config:
            compare(f"scheduler {key}", ref_config.get(key), al_config.get(key))
    compare("eta", getattr(reference, "eta", None), getattr(aligned, "eta", None))
    ref_x, al_x = _event(reference), _event(aligned)
    compare("latent shape", tuple(ref_x.shape[1:]), tuple(al_x.shape[1:]))
    compare("dtype", ref_x.dtype, al_x.dtype)
    compare("device", ref_x.device, al_x.device)
    if diffs:
        raise ValueError(
            f"The reference and aligned models cannot be realigned: they differ in {'; '.join(diffs)}. "
            f"Build both with the same scheduler config, num_steps and eta, from models with the same prediction "
            f"type and latent shape."
        )


def _same_tensor(a, b) -> bool:
    if a is None or b is None:
        return a is b
    a, b = _as_cpu(a), _as_cpu(b)
    return a.shape == b.shape and torch.equal(a, b)


def _show(value) -> str:
    if isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple)) and len(value) > 6):
        t = torch.as_tensor(value).detach().flatten().to("cpu", torch.float64)
        head = ", ".join(f"{float(v):.6g}" for v in t[:3])
        return (
            f"[{head}{', …' if t.numel() > 3 else ''}] ({t.numel()} values)" if t.numel() != 1 else f"{float(t):.6g}"
        )
    return repr(value)
