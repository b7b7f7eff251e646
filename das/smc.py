"""DAS: Sequential Monte Carlo over the denoising chain, batched over prompts × particles.

Samples ``p_tar(x) ∝ p_pre(x) · exp(r(x)/α)`` with no fine-tuning. All ``B`` prompts'
``K`` particles live in one tensor of ``N = B·K`` rows (prompt-major: row ``b·K + k``).
At every step, for every particle:

1. the adapter gives the pretrained transition at ``x_t`` and Tweedie's ``x̂0(x_t)``; the
   reward of the decoded ``x̂0`` defines the log-twist ``ψ_t = λ_t r(x̂0(x_t)) / α``;
2. a prompt whose ESS fell below ``ess_threshold · K`` resamples its particles;
3. the proposal shifts the pretrained mean by ``σ_t² λ_{t-1} ∇_{x_t} r(x̂0(x_t)) / α``
   (no shift for rewards without gradients; cheaper gradients and schedules: :mod:`das.proposals`);
4. the incremental log-weight is
   ``log p_pre(x_{t-1}|x_t) − log q(x_{t-1}|x_t) + ψ_{t-1}(x_{t-1}) − ψ_t(x_t)``.

At the end the twist is the exact reward of the decoded sample with ``λ = 1``, so the
final weights target ``p_tar`` exactly (up to the chain's own discretization), and the
running product of mean incremental weights estimates ``log E_pre[exp(r/α)]``.

On accelerators nothing in a step synchronizes with the host: resampling runs for every
prompt on the device and is applied where the ESS test says so (``torch.where``), and
traces are stacked only at the end. On the CPU, where a host check costs nothing, steps on
which no prompt needs resampling skip that work.

A separate base proposal (``proposal_adapter``, e.g. DeRaDiff's
:class:`~das.adapters.realigned.RealignedAdapter` over the same reference) keeps the target
path ``p_pre`` (the adapter's chain) and moves the particles by the proposal's transition
instead; the incremental weight then carries the exact log-density ratio of the two
Gaussians (see :class:`DASSampler`).

Structure, in the spirit of ``particles``' ``SMC.__next__`` and blackjax's ``init``/``step``:
the particle system is an :class:`~das.smc_state.SMCState` (particles, log-weights, ``λ``, the
:class:`~das.smc_state.Evaluation` at the particles, ``log Z``), built by ``_init`` at ``x_T``;
:meth:`DASSampler.sample` runs, once per transition, the stages ``_resample`` →
``_propose`` → ``_reweight`` → record (a :class:`~das.smc_state.TraceRecorder`), and returns
the samples with their diagnostics trace (:class:`~das.smc_state.SMCResult`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from das.adapters.base import Conditioning, DenoiserAdapter
from das.proposals import ProposalGradient
from das.resampling import effective_sample_size, get_resampler, normalize_with_log_sum
from das.rewards.base import Reward
from das.smc_state import Evaluation, SMCResult, SMCState, SMCTrace, TraceRecorder
from das.tempering import Schedule, TemperingInfo, tempering_from_options

__all__ = ["AUTOCAST_DTYPES", "SELECTIONS", "DASSampler", "Evaluation", "SMCResult", "SMCState", "SMCTrace"]

SELECTIONS = ("max_weight", "sample", "all")
#: The dtypes of the opt-in ``autocast`` of the model passes.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class _Batch:
    """One call's prompts: `N` row prompts and the adapters' conditioning, rows repeated ``K`` times."""

    num_prompts: int
    row_prompts: list[str]
    conds: tuple[Conditioning, Conditioning | None]  # the adapter's and the proposal adapter's (None without one)


class _Proposal(NamedTuple):
    """The propose stage's draw: particles `(N, *event)`, their ``λ`` `(B,)`, ``log p − log q`` `(B, K)` or 0."""

    x: torch.Tensor
    lam: torch.Tensor
    log_ratio: torch.Tensor | float


def _full_std(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """A transition's std, detached: kept a scalar when it is one, else broadcast to `mean`'s shape."""
    std = std.detach()
    return std if std.numel() == 1 else torch.broadcast_to(std, mean.shape)


def _particle_format(adapter: DenoiserAdapter) -> tuple[int, tuple[int, ...]]:
    """An adapter's chain length and the shape of one particle."""
    x = adapter.initial_noise(1, torch.Generator(device=adapter.device).manual_seed(0))
    return adapter.num_steps, tuple(x.shape[1:])


def _check_proposal(adapter: DenoiserAdapter, proposal: DenoiserAdapter) -> None:
    """One ``ValueError`` unless the proposal adapter runs the same chain over particles of the same shape."""
    (steps, shape), (proposal_steps, proposal_shape) = _particle_format(adapter), _particle_format(proposal)
    if (steps, shape) != (proposal_steps, proposal_shape):
        raise ValueError(
            f"proposal_adapter must run the adapter's chain: the adapter has {steps} steps over particles of "
            f"shape {shape}, the proposal adapter {proposal_steps} steps over {proposal_shape}; build both "
            f"with the same num_steps and latent shape."
        )


def _squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-row ``‖x‖²`` in float32 (at least), `(N,)`."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1, dtype=torch.promote_types(x.dtype, torch.float32)) ** 2


class DASSampler:
    """Diffusion Alignment as Sampling over any :class:`DenoiserAdapter`.

    Args:
        adapter: the pretrained model's adapter.
        reward: a :class:`~das.rewards.Reward`.
        kl_coeff: α, the KL weight of the target ``p_pre · exp(r/α)``.
        num_particles: K particles per prompt.
        resampling: scheme name (see :mod:`das.resampling`).
        ess_threshold: resample a prompt when its ESS < ``ess_threshold · K``; in [0, 1].
        tempering: a schedule name (see :mod:`das.tempering`) or a schedule object.
        tempering_gamma: γ for the exponential schedule.
        tempering_start: the start index ``s`` of the schedule: ``λ_j = 0`` for ``j ≤ s`` (the
            twists of ``x_T`` and of the particles after the first ``s`` transitions) except
            with ``"none"``.
        selection: ``"max_weight"`` (the paper), ``"sample"`` (one draw by weight) or
            ``"all"``.
        use_gradient: take the reward gradient for the proposal; defaults to the reward's
            ``differentiable`` flag. ``False`` gives the gradient-free mode (pretrained
            proposal, reward only in the weights).
        max_chunk_rows: at most this many rows per model forward/backward, to bound memory;
            None processes all ``B·K`` rows at once.
        progress: show a progress bar over denoising steps.
        proposal_adapter: a separate base proposal over the same chain (same ``num_steps``
            and particle shape), e.g. a :class:`~das.adapters.realigned.RealignedAdapter`
            over `adapter`; None (the default) proposes from `adapter` itself. See below.
        gradient: the proposal's gradient (:mod:`das.proposals`): ``"full"`` (autograd
            through the model), ``"jacobian_free"`` (at ``x̂0``, mapped back by ``1/√ᾱ_t``) or
            ``"none"``; None follows `use_gradient`. The weights stay exact for each.
        gradient_every: take the gradient every this many steps (counted back from the last).
        gradient_after: take no gradient during this first fraction of the steps, in [0, 1).
        gradient_reuse: steps without a fresh gradient shift by the last one taken (else not at all).
        autocast: ``"bf16"`` or ``"fp16"`` runs the model passes (UNet, decode, reward) under
            ``torch.autocast`` in that dtype; particles, weights and log-weights stay in the
            adapter's dtype and float32. None (the default) runs them as they are.

    A separate proposal. The target stays ``p_adapter · exp(r/α)``: the target path is
    `adapter`'s chain ``p(x_{t-1}|x_t) = N(μ_t, σ_t²)`` twisted by ``ψ_t``, the twist read
    from `adapter`'s Tweedie estimate and the chain started from `adapter`'s ``x_T``. The
    particles move by the proposal adapter's transition ``N(μ'_t, σ'_t²)``, shifted by DAS's
    ``σ'_t² λ_{t-1} ∇r/α`` when gradients are used: the draw is ``x = μ'_t + σ'_t z`` with
    ``z = ε + σ'_t λ_{t-1} ∇r/α`` and ``ε ~ N(0, I)``, `(N, *event_shape)`. With
    ``u = (σ'_t z + μ'_t − μ_t)/σ_t``, the target transition's standardized residual, the
    exact log-density ratio of the target path's transition to the proposal drawn from is

        log p(x|x_t) − log q(x|x_t) = (‖ε‖² − ‖u‖²)/2 + Σ log(σ'_t/σ_t),

    summed over the particle's elements; for equal stds (a realigned proposal)
    ``(‖ε‖² − ‖z + (μ'_t − μ_t)/σ_t‖²)/2``, and with ``μ' = μ`` it is the default's
    ``(‖ε‖² − ‖z‖²)/2``, bit for bit. Where ``σ_t = 0`` (a deterministic step, e.g. DDIM's
    last) the target path has a point mass: the particle takes ``μ_t`` and the term is 0.
    Where ``σ'_t = 0 < σ_t`` the draw uses ``σ_t`` (a proposal must cover the target).
    The weights correct the proposal exactly; they stay well spread when the proposal is
    close to the twisted target, as DeRaDiff's realigned chain at ``λ`` is to the target at
    ``α/λ`` (``benchmarks/bench_realign.py``). Each step evaluates both adapters.

    Raises:
        ValueError: an argument is out of range, or the proposal adapter's chain length or
            particle shape differs from the adapter's.
    """

    def __init__(
        self,
        adapter: DenoiserAdapter,
        reward: Reward,
        kl_coeff: float,
        num_particles: int = 4,
        resampling: str = "ssp",
        ess_threshold: float = 0.5,
        tempering: str | Schedule = "exponential",
        tempering_gamma: float = 0.008,
        tempering_start: int = 0,
        selection: str = "max_weight",
        use_gradient: bool | None = None,
        max_chunk_rows: int | None = None,
        progress: bool = False,
        proposal_adapter: DenoiserAdapter | None = None,
        gradient: str | None = None,
        gradient_every: int = 1,
        gradient_after: float = 0.0,
        gradient_reuse: bool = False,
        autocast: str | None = None,
    ):
        if kl_coeff <= 0:
            raise ValueError(f"kl_coeff (α) must be positive, got {kl_coeff}.")
        if num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}.")
        if not 0.0 <= ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold}.")
        if selection not in SELECTIONS:
            raise ValueError(f"Unknown selection {selection!r}; choose one of: {', '.join(SELECTIONS)}.")
        if max_chunk_rows is not None and max_chunk_rows < 1:
            raise ValueError(f"max_chunk_rows must be at least 1, got {max_chunk_rows}.")
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"Unknown autocast {autocast!r}; choose one of: {', '.join(AUTOCAST_DTYPES)} or None.")
        self.proposal_gradient = ProposalGradient.resolve(
            adapter, reward, use_gradient, gradient, gradient_every, gradient_after, gradient_reuse
        )
        if proposal_adapter is not None:
            _check_proposal(adapter, proposal_adapter)
        self.adapter = adapter
        self.proposal_adapter = proposal_adapter
        self.reward = reward
        self.kl_coeff = float(kl_coeff)
        self.num_particles = int(num_particles)
        self.resample = get_resampler(resampling)
        self.ess_threshold = float(ess_threshold)
        if isinstance(tempering, str):
            # adaptive tempering takes the resampling threshold as its ESS target (0.5 where that is 0)
            target = ess_threshold if ess_threshold > 0 else 0.5
            tempering = tempering_from_options(
                tempering, start=tempering_start, gamma=tempering_gamma, ess_threshold=target
            )
        self.tempering: Schedule = tempering
        self.selection = selection
        self.use_gradient = self.proposal_gradient.uses_gradient
        self.max_chunk_rows = max_chunk_rows
        self.progress = progress
        self.autocast_dtype = None if autocast is None else AUTOCAST_DTYPES[autocast]

    # ------------------------------------------------------------------ the loop
    def sample(self, prompts: Sequence[str], generator: torch.Generator | None = None) -> SMCResult:
        """Runs DAS for every prompt at once.

        Args:
            prompts: ``B`` prompts (any strings for unconditional models).
            generator: the source of all randomness (noise, resampling, selection); on the
                adapter's device.

        Returns:
            An :class:`SMCResult`.
        """
        if len(prompts) == 0:
            raise ValueError("sample() needs at least one prompt.")
        if generator is None:
            generator = torch.Generator(device=self.adapter.device).manual_seed(0)
        batch = self._batch(prompts)
        state = self._init(batch, generator)
        trace = TraceRecorder.start(state)
        for _ in tqdm(range(self.adapter.num_steps), desc="DAS", disable=not self.progress, leave=False):
            state, ess, resampled = self._resample(state, generator)
            proposal = self._propose(state, generator)
            state = self._reweight(state, proposal, batch)
            trace.record(ess, resampled, state)
        return self._result(state, trace.finish(state), generator)

    def _batch(self, prompts: Sequence[str]) -> _Batch:
        """The row prompts and the adapter's and proposal adapter's conditioning, each row repeated ``K`` times."""
        k = self.num_particles

        def encode(adapter: DenoiserAdapter) -> Conditioning:
            return {
                key: value.repeat_interleave(k, dim=0) for key, value in adapter.encode_prompts(list(prompts)).items()
            }

        conds = encode(self.adapter), None if self.proposal_adapter is None else encode(self.proposal_adapter)
        return _Batch(len(prompts), [p for p in prompts for _ in range(k)], conds)

    def _init(self, batch: _Batch, generator: torch.Generator) -> SMCState:
        """``x_T`` with weights ``∝ exp(λ_0 r(x̂0(x_T))/α)``; ``λ_0`` from the schedule at uniform weights."""
        b, k, device = batch.num_prompts, self.num_particles, self.adapter.device
        x = self.adapter.initial_noise(b * k, generator)
        evaluation = self._evaluate(x, 0, batch.conds, batch.row_prompts)
        uniform = torch.zeros(b, k, device=device)
        lam = self.tempering(self._info(0, torch.zeros(b, device=device), uniform, evaluation, x))
        reward = evaluation.reward.view(b, k)
        log_w, log_z = normalize_with_log_sum(lam.unsqueeze(-1) * reward / self.kl_coeff)  # normalized from here on
        degenerate = torch.zeros(b, device=device, dtype=torch.long)
        return SMCState(x, log_w, lam, evaluation, log_z - math.log(k), degenerate, step=0)

    # ------------------------------------------------------------------ stages
    def _resample(self, state: SMCState, generator: torch.Generator) -> tuple[SMCState, torch.Tensor, torch.Tensor]:
        """Resamples the prompts whose ESS fell below the threshold.

        Returns:
            The state after resampling, the ESS before it `(B,)` and which prompts resampled `(B,)`.
        """
        log_w = state.log_weights
        b, k = log_w.shape
        ess = effective_sample_size(log_w, normalized=True)
        resample = ess < self.ess_threshold * k
        # On the CPU a host check is free and skips the resampling work on quiet steps;
        # on accelerators every prompt resamples on the device and `where` applies it.
        if state.x.device.type != "cpu" or bool(resample.any()):
            identity = torch.arange(k, device=log_w.device).expand(b, k)
            offsets = (torch.arange(b, device=log_w.device) * k).unsqueeze(-1)  # (B, 1)
            ancestors = torch.where(resample.unsqueeze(-1), self.resample(log_w, generator), identity)
            log_w = torch.where(resample.unsqueeze(-1), torch.full_like(log_w, -math.log(k)), log_w)
            state = state.take((ancestors + offsets).reshape(-1), log_w)
        return state, ess, resample

    def _propose(self, state: SMCState, generator: torch.Generator) -> _Proposal:
        """Draws ``x_{t-1}`` from the twisted transition at ``λ_{t-1}`` (the schedule's, 1 at the last step)."""
        if state.step == self.adapter.num_steps - 1:
            lam_next = torch.ones_like(state.lam)
        else:
            lam_next = self.tempering(
                self._info(state.step + 1, state.lam, state.log_weights, state.evaluation, state.x)
            )
        current, x = state.evaluation, state.x
        noise = torch.randn(x.shape, generator=generator, device=self.adapter.device, dtype=x.dtype)
        if current.proposal_mean is not None:
            return _Proposal(*self._propose_from_proposal(current, noise, lam_next))
        if current.grad is None:
            return _Proposal(torch.addcmul(current.mean, current.std, noise), lam_next, 0.0)
        # The proposal N(μ + σ²λ∇r/α, σ²) draws x = μ + σ z with z = ε + σλ∇r/α, and
        # log p_pre(x) − log q(x) = (‖ε‖² − ‖z‖²) / 2.
        scale = current.std * self._lam_over_alpha(lam_next, x)
        z = torch.addcmul(noise, scale, current.grad)
        x = torch.addcmul(current.mean, current.std, z)
        return _Proposal(x, lam_next, 0.5 * (_squared_norm(noise) - _squared_norm(z)).view(-1, self.num_particles))

    def _reweight(self, state: SMCState, proposal: _Proposal, batch: _Batch) -> SMCState:
        """Twists the new particles (Tweedie's reward, the exact one at the end) and updates weights and ``log Z``."""
        step = state.step + 1
        if step == self.adapter.num_steps:
            evaluation = self._final_reward(proposal.x, batch.row_prompts)
        else:
            evaluation = self._evaluate(proposal.x, step, batch.conds, batch.row_prompts)
            if evaluation.grad is None and self.proposal_gradient.reuse:  # the last gradient shifts this step too
                evaluation.grad = state.evaluation.grad
        new_reward = evaluation.reward.view_as(state.log_weights)
        twist = proposal.lam.unsqueeze(-1) * new_reward - state.lam.unsqueeze(-1) * state.reward
        log_w, log_sum = normalize_with_log_sum(state.log_weights + (proposal.log_ratio + twist / self.kl_coeff))
        degenerate = state.degenerate_steps + (~torch.isfinite(log_sum)).long()
        return SMCState(proposal.x, log_w, proposal.lam, evaluation, state.log_normalizer + log_sum, degenerate, step)

    def _lam_over_alpha(self, lam_next: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``λ_{t-1}/α`` per particle row, shaped to broadcast over `x` `(N, *event)`."""
        return (
            (lam_next / self.kl_coeff)
            .to(x.dtype)
            .repeat_interleave(self.num_particles)
            .view(-1, *([1] * (x.dim() - 1)))
        )

    def _propose_from_proposal(
        self, current: Evaluation, noise: torch.Tensor, lam_next: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draws from the proposal adapter's (shifted) transition; the exact ratio to the adapter's.

        See :class:`DASSampler`: ``x = μ' + σ' z``, ``z = ε + σ' λ ∇r/α``,
        ``u = (σ' z + μ' − μ)/σ``, log-ratio ``(‖ε‖² − ‖u‖²)/2 + Σ log(σ'/σ)``; elements
        with ``σ = 0`` take ``μ`` and add nothing.

        Returns:
            The particles `(N, *event)`, `lam_next` and the log-ratio `(B, K)`.
        """
        mean, std = current.mean, current.std
        random = std > 0  # where the target path's transition has a density
        proposal_std = torch.where(current.proposal_std > 0, current.proposal_std, std)
        z = noise
        if current.grad is not None:
            z = torch.addcmul(noise, proposal_std * self._lam_over_alpha(lam_next, noise), current.grad)
        x = torch.where(random, torch.addcmul(current.proposal_mean, proposal_std, z), mean)
        # Elements with σ = 0 would divide by 0; `where` drops them.
        u = torch.where(random, (proposal_std / std) * z + (current.proposal_mean - mean) / std, noise)
        log_scale = torch.where(random, torch.log(proposal_std / std), torch.zeros_like(std))
        log_det = torch.broadcast_to(log_scale, x.shape).flatten(1).sum(1)
        k = self.num_particles
        return x, lam_next, (0.5 * (_squared_norm(noise) - _squared_norm(u)) + log_det).view(-1, k)

    def _info(
        self, index: int, lam: torch.Tensor, log_w: torch.Tensor, current: Evaluation, x: torch.Tensor
    ) -> TemperingInfo:
        """What the tempering schedule sees when asked for ``λ_index``: weights, rewards, guidance norms if it asks."""
        b, k = log_w.shape
        guidance_norm = drift_norm = None
        if getattr(self.tempering, "needs_gradient_norms", False) and current.grad is not None:
            guidance = current.std.float() ** 2 * current.grad.float() / self.kl_coeff
            guidance_norm = guidance.flatten(1).norm(dim=1).view(b, k)
            drift_norm = (current.mean - x).float().flatten(1).norm(dim=1).view(b, k)
        return TemperingInfo(
            index=index,
            num_steps=self.adapter.num_steps,
            lam=lam,
            log_weights=log_w,
            reward_over_alpha=current.reward.view(b, k) / self.kl_coeff,
            guidance_norm=guidance_norm,
            drift_norm=drift_norm,
        )

    # ------------------------------------------------------------------ evaluation
    def _evaluate(
        self, x: torch.Tensor, step: int, conds: tuple[Conditioning, Conditioning | None], prompts: Sequence[str]
    ) -> Evaluation:
        """Both transitions at chain step `step`, the reward of ``decode(x̂0)`` and its gradient at `x`, chunked.

        Args:
            x: particles, `(N, *event_shape)`.
            step: chain step.
            conds: the adapter's and the proposal adapter's conditioning (None without one),
                `N` rows each.
            prompts: `N` row prompts.
        """
        return self._in_chunks(x, lambda rows: self._evaluate_rows(x, rows, step, conds, prompts))

    def _final_reward(self, x: torch.Tensor, prompts: Sequence[str]) -> Evaluation:
        """The decoded particles and their exact reward (no gradient needed), chunked."""
        return self._in_chunks(x, lambda rows: self._final_rows(x[rows], prompts[rows]))

    def _in_chunks(self, x: torch.Tensor, evaluate: Callable[[slice], dict[str, torch.Tensor]]) -> Evaluation:
        """Runs `evaluate` over consecutive chunks of at most ``max_chunk_rows`` rows of `x` and joins the results."""
        n = x.shape[0]
        chunk = self.max_chunk_rows or n
        return Evaluation.concat([evaluate(slice(start, min(start + chunk, n))) for start in range(0, n, chunk)])

    def _evaluate_rows(
        self,
        x: torch.Tensor,
        rows: slice,
        step: int,
        conds: tuple[Conditioning, Conditioning | None],
        prompts: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """:meth:`_evaluate` on the particles `rows`: the fields of an :class:`Evaluation`."""
        out = {}
        x_chunk = x[rows].detach()
        cond, proposal_cond = (None if c is None else {key: value[rows] for key, value in c.items()} for c in conds)
        with self._model_precision():
            transition, reward, grad = self.proposal_gradient.evaluate(
                self.adapter, self.reward, x_chunk, step, cond, prompts[rows]
            )
            if self.proposal_adapter is not None:
                with torch.no_grad():
                    proposal = self.proposal_adapter.transition(x_chunk.detach(), step, proposal_cond)
        if grad is not None:
            out["grad"] = grad.to(x_chunk.dtype)
        if self.proposal_adapter is not None:
            out["proposal_mean"] = proposal.mean.detach().to(x_chunk.dtype)
            out["proposal_std"] = _full_std(proposal.std, proposal.mean)
        out["mean"] = transition.mean.detach().to(x_chunk.dtype)
        out["std"] = _full_std(transition.std, transition.mean)
        out["reward"] = reward.detach().float()
        return out

    @torch.no_grad()
    def _final_rows(self, x: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """:meth:`_final_reward` on one chunk of particles."""
        with self._model_precision():
            images = self.adapter.decode(x)
            reward = self.reward(images, list(prompts)).float()
        return {"images": images if self.autocast_dtype is None else images.to(x.dtype), "reward": reward}

    def _model_precision(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in the ``autocast`` dtype for the model passes; a no-op context without one."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.adapter.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ result
    def _result(self, state: SMCState, trace: SMCTrace, generator: torch.Generator) -> SMCResult:
        """Packs the final particles, weights and the trace."""
        b, k = state.log_weights.shape
        samples = state.x.view(b, k, *state.x.shape[1:])
        images = state.evaluation.images
        images = images.view(b, k, *images.shape[1:])
        selected_index, selected = self._select(state.log_weights, images, generator)
        return SMCResult(
            samples=samples.detach(),
            images=images.detach(),
            rewards=state.reward,
            log_weights=state.log_weights,
            log_normalizer=state.log_normalizer,
            selected_index=selected_index,
            selected=selected.detach(),
            trace=trace,
        )

    def _select(
        self, log_w: torch.Tensor, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The selected particle indices and images (see ``selection``)."""
        b = log_w.shape[0]
        if self.selection == "all":
            return torch.arange(self.num_particles, device=log_w.device).expand(b, -1), images
        if self.selection == "max_weight":
            index = log_w.argmax(dim=-1)
        else:
            index = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
        return index, images[torch.arange(b, device=log_w.device), index]
