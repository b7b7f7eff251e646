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
the sampler holds the model (its adapter, and a proposal adapter if any) and frozen
:class:`~das.smc_settings.DASSettings`; the reward is an argument of every call.
:meth:`DASSampler.init` builds the particle system at ``x_T`` (an
:class:`~das.smc_state.SMCState`: particles, log-weights, ``λ``, the
:class:`~das.smc_state.Evaluation` at the particles, ``log Z``, the prompts and the trace so
far); :meth:`DASSampler.step` runs one transition, the stages ``_resample`` → ``_propose`` →
``_reweight``, and returns the new state with a :class:`~das.smc_state.StepInfo`;
:meth:`DASSampler.finish` picks the samples and returns them with their diagnostics trace
(:class:`~das.smc_state.SMCResult`). :meth:`DASSampler.sample` is ``init``, ``num_steps``
steps (calling an optional callback after each) and ``finish``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from das.adapters.base import Conditioning, DenoiserAdapter
from das.proposals import GradientOptions, ProposalGradient, alpha_bars
from das.resampling import effective_sample_size, get_resampler, normalize_with_log_sum
from das.rewards.base import Reward
from das.smc_settings import AUTOCAST_DTYPES, SELECTIONS, DASSettings
from das.smc_state import Evaluation, PromptBatch, SMCResult, SMCState, SMCTrace, StepInfo, TraceRecorder
from das.tempering import TemperingInfo

__all__ = [
    "AUTOCAST_DTYPES",
    "SELECTIONS",
    "DASSampler",
    "DASSettings",
    "Evaluation",
    "GradientOptions",
    "SMCResult",
    "SMCState",
    "SMCTrace",
    "StepCallback",
    "StepInfo",
]

#: ``callback(state, info)``, called by :meth:`DASSampler.sample` after every transition.
StepCallback = Callable[[SMCState, StepInfo], None]


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
        settings: how to sample (:class:`~das.smc_settings.DASSettings`).
        proposal_adapter: a separate base proposal over the same chain (same ``num_steps``
            and particle shape), e.g. a :class:`~das.adapters.realigned.RealignedAdapter`
            over `adapter`; None (the default) proposes from `adapter` itself. See below.

    The reward is an argument of :meth:`sample`, :meth:`init` and :meth:`step`, so one
    sampler serves any number of rewards (e.g. a fresh Thompson draw per call); a chain's
    steps must use the reward its :meth:`init` used.

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
        ValueError: `settings` is not a :class:`DASSettings`, ``"jacobian_free"`` gradients are
            asked of an adapter without ``ᾱ_t``, or the proposal adapter's chain length or
            particle shape differs from the adapter's.
    """

    def __init__(
        self, adapter: DenoiserAdapter, settings: DASSettings, proposal_adapter: DenoiserAdapter | None = None
    ):
        if not isinstance(settings, DASSettings):
            raise ValueError(
                f"DASSampler takes a DASSettings (das.smc.DASSettings(kl_coeff=...)), got {type(settings).__name__}."
            )
        if proposal_adapter is not None:
            _check_proposal(adapter, proposal_adapter)
        self.adapter = adapter
        self.proposal_adapter = proposal_adapter
        self.settings = settings
        self.tempering = settings.schedule()
        self._resampler = get_resampler(settings.resampling)
        options = settings.gradient
        self._jacobian_free_scales = (
            tuple(1.0 / math.sqrt(a) for a in alpha_bars(adapter)) if options.kind == "jacobian_free" else ()
        )

    @property
    def num_steps(self) -> int:
        """The chain's transitions: a state is finished when its ``step`` reaches this."""
        return self.adapter.num_steps

    @property
    def num_particles(self) -> int:
        """K, the particles per prompt."""
        return self.settings.num_particles

    @property
    def kl_coeff(self) -> float:
        """α."""
        return self.settings.kl_coeff

    def proposal_gradient(self, reward: Reward) -> ProposalGradient:
        """The proposal's gradient for `reward` (``"auto"`` decided by its ``differentiable`` flag).

        Raises:
            ValueError: a gradient is asked of a reward that is not differentiable.
        """
        options = self.settings.gradient
        kind = options.kind_for(reward)
        scales = self._jacobian_free_scales if kind == "jacobian_free" else ()
        return ProposalGradient(kind, options.every, options.after, options.reuse, scales)

    # ------------------------------------------------------------------ the public steps
    def sample(
        self,
        prompts: Sequence[str],
        reward: Reward,
        generator: torch.Generator,
        callback: StepCallback | None = None,
    ) -> SMCResult:
        """Runs DAS for every prompt at once: :meth:`init`, :meth:`step` to the chain's end, :meth:`finish`.

        Args:
            prompts: ``B`` prompts (any strings for unconditional models).
            reward: the :class:`~das.rewards.Reward` of the target ``p_pre · exp(r/α)``.
            generator: the source of all randomness (noise, resampling, selection); on the
                adapter's device.
            callback: called as ``callback(state, info)`` after every transition.

        Returns:
            An :class:`SMCResult`.
        """
        state = self.init(prompts, reward, generator)
        steps = range(state.step, self.num_steps)
        for _ in tqdm(steps, desc="DAS", disable=not self.settings.progress, leave=False):
            state, info = self.step(state, reward, generator)
            if callback is not None:
                callback(state, info)
        return self.finish(state, generator)

    def init(self, prompts: Sequence[str], reward: Reward, generator: torch.Generator) -> SMCState:
        """The particle system at ``x_T``: weights ``∝ exp(λ_0 r(x̂0(x_T))/α)``, ``λ_0`` from the schedule.

        Args:
            prompts: ``B`` prompts.
            reward: the reward (see :meth:`sample`).
            generator: draws ``x_T``.

        Raises:
            ValueError: no prompts, or a gradient is asked of a reward that is not differentiable.
        """
        if len(prompts) == 0:
            raise ValueError("DAS needs at least one prompt.")
        strategy = self.proposal_gradient(reward)
        batch = self._batch(prompts)
        b, k, device = batch.num_prompts, self.num_particles, self.adapter.device
        x = self.adapter.initial_noise(b * k, generator)
        evaluation = self._evaluate(x, 0, batch, reward, strategy)
        uniform = torch.zeros(b, k, device=device)
        lam = self.tempering(self._info(0, torch.zeros(b, device=device), uniform, evaluation, x))
        rewards = evaluation.reward.view(b, k)
        log_w, log_z = normalize_with_log_sum(lam.unsqueeze(-1) * rewards / self.kl_coeff)  # normalized from here on
        degenerate = torch.zeros(b, device=device, dtype=torch.long)
        state = SMCState(x, log_w, lam, evaluation, log_z - math.log(k), degenerate, step=0, batch=batch)
        return replace(state, trace=TraceRecorder.start(lam, state.weighted_reward))

    def step(self, state: SMCState, reward: Reward, generator: torch.Generator) -> tuple[SMCState, StepInfo]:
        """One transition: resample the prompts whose ESS is low, propose, reweight.

        Args:
            state: a state of this sampler's chain with steps left (``state.step < num_steps``).
            reward: the reward its :meth:`init` used.
            generator: draws the resampling and the proposal's noise.

        Returns:
            The new state and what the step did (:class:`StepInfo`).

        Raises:
            ValueError: the state's chain has ended.
        """
        if state.step >= self.num_steps:
            raise ValueError(f"The chain has ended (step {state.step} of {self.num_steps}); call finish(state).")
        state, ess, resampled = self._resample(state, generator)
        proposal = self._propose(state, generator)
        new, log_increment = self._reweight(state, proposal, reward, self.proposal_gradient(reward))
        info = StepInfo(new.step, ess, resampled, new.lam, new.weighted_reward, log_increment)
        return replace(new, trace=state.trace.record(info)), info

    def finish(self, state: SMCState, generator: torch.Generator) -> SMCResult:
        """The samples of a finished chain, the chosen one(s) (``settings.selection``) and the trace.

        Args:
            state: the state after the last :meth:`step`.
            generator: draws the chosen particle for ``selection="sample"``.

        Raises:
            ValueError: the chain has steps left.
        """
        if state.step != self.num_steps:
            raise ValueError(f"The chain has {self.num_steps - state.step} steps left; step it to the end first.")
        trace = state.trace.finish(state.log_weights, state.degenerate_steps)
        return self._result(state, trace, generator)

    def _batch(self, prompts: Sequence[str]) -> PromptBatch:
        """The row prompts and the adapter's and proposal adapter's conditioning, each row repeated ``K`` times."""
        k = self.num_particles

        def encode(adapter: DenoiserAdapter) -> Conditioning:
            return {
                key: value.repeat_interleave(k, dim=0) for key, value in adapter.encode_prompts(list(prompts)).items()
            }

        conds = encode(self.adapter), None if self.proposal_adapter is None else encode(self.proposal_adapter)
        return PromptBatch(len(prompts), [p for p in prompts for _ in range(k)], conds)

    # ------------------------------------------------------------------ stages
    def _resample(self, state: SMCState, generator: torch.Generator) -> tuple[SMCState, torch.Tensor, torch.Tensor]:
        """Resamples the prompts whose ESS fell below the threshold.

        Returns:
            The state after resampling, the ESS before it `(B,)` and which prompts resampled `(B,)`.
        """
        log_w = state.log_weights
        b, k = log_w.shape
        ess = effective_sample_size(log_w, normalized=True)
        resample = ess < self.settings.ess_threshold * k
        # On the CPU a host check is free and skips the resampling work on quiet steps;
        # on accelerators every prompt resamples on the device and `where` applies it.
        if state.x.device.type != "cpu" or bool(resample.any()):
            identity = torch.arange(k, device=log_w.device).expand(b, k)
            offsets = (torch.arange(b, device=log_w.device) * k).unsqueeze(-1)  # (B, 1)
            ancestors = torch.where(resample.unsqueeze(-1), self._resampler(log_w, generator), identity)
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

    def _reweight(
        self, state: SMCState, proposal: _Proposal, reward: Reward, strategy: ProposalGradient
    ) -> tuple[SMCState, torch.Tensor]:
        """Twists the new particles (Tweedie's reward, the exact one at the end) and updates weights and ``log Z``.

        Returns:
            The new state and the log of the mean incremental weight `(B,)`.
        """
        step = state.step + 1
        if step == self.adapter.num_steps:
            evaluation = self._final_reward(proposal.x, state.batch.row_prompts, reward)
        else:
            evaluation = self._evaluate(proposal.x, step, state.batch, reward, strategy)
            if evaluation.grad is None and strategy.reuse:  # the last gradient shifts this step too
                evaluation.grad = state.evaluation.grad
        new_reward = evaluation.reward.view_as(state.log_weights)
        twist = proposal.lam.unsqueeze(-1) * new_reward - state.lam.unsqueeze(-1) * state.reward
        log_w, log_sum = normalize_with_log_sum(state.log_weights + (proposal.log_ratio + twist / self.kl_coeff))
        degenerate = state.degenerate_steps + (~torch.isfinite(log_sum)).long()
        new = replace(
            state,
            x=proposal.x,
            log_weights=log_w,
            lam=proposal.lam,
            evaluation=evaluation,
            log_normalizer=state.log_normalizer + log_sum,
            degenerate_steps=degenerate,
            step=step,
        )
        return new, log_sum

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
        self, x: torch.Tensor, step: int, batch: PromptBatch, reward: Reward, strategy: ProposalGradient
    ) -> Evaluation:
        """Both transitions at chain step `step`, the reward of ``decode(x̂0)`` and its gradient at `x`, chunked.

        Args:
            x: particles, `(N, *event_shape)`.
            step: chain step.
            batch: the `N` row prompts and their conditioning.
            reward: the reward.
            strategy: the proposal's gradient for `reward`.
        """
        return self._in_chunks(x, lambda rows: self._evaluate_rows(x[rows], rows, step, batch, reward, strategy))

    def _final_reward(self, x: torch.Tensor, prompts: Sequence[str], reward: Reward) -> Evaluation:
        """The decoded particles and their exact reward (no gradient needed), chunked."""
        return self._in_chunks(x, lambda rows: self._final_rows(x[rows], prompts[rows], reward))

    def _in_chunks(self, x: torch.Tensor, evaluate: Callable[[slice], dict[str, torch.Tensor]]) -> Evaluation:
        """Runs `evaluate` over consecutive chunks of at most ``max_chunk_rows`` rows of `x` and joins the results."""
        n = x.shape[0]
        chunk = self.settings.max_chunk_rows or n
        return Evaluation.concat([evaluate(slice(start, min(start + chunk, n))) for start in range(0, n, chunk)])

    def _evaluate_rows(
        self,
        x_chunk: torch.Tensor,
        rows: slice,
        step: int,
        batch: PromptBatch,
        reward: Reward,
        strategy: ProposalGradient,
    ) -> dict[str, torch.Tensor]:
        """:meth:`_evaluate` on the particles `x_chunk`, rows `rows`: the fields of an :class:`Evaluation`."""
        out = {}
        x_chunk = x_chunk.detach()
        cond, proposal_cond = (
            None if c is None else {key: value[rows] for key, value in c.items()} for c in batch.conds
        )
        with self._model_precision():
            transition, value, grad = strategy.evaluate(
                self.adapter, reward, x_chunk, step, cond, batch.row_prompts[rows]
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
        out["reward"] = value.detach().float()
        return out

    @torch.no_grad()
    def _final_rows(self, x: torch.Tensor, prompts: Sequence[str], reward: Reward) -> dict[str, torch.Tensor]:
        """:meth:`_final_reward` on one chunk of particles."""
        with self._model_precision():
            images = self.adapter.decode(x)
            value = reward(images, list(prompts)).float()
        return {"images": images if self.settings.autocast is None else images.to(x.dtype), "reward": value}

    def _model_precision(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in the ``autocast`` dtype for the model passes; a no-op context without one."""
        dtype = self.settings.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.adapter.device.type, dtype=dtype)

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
        selection = self.settings.selection
        if selection == "all":
            return torch.arange(self.num_particles, device=log_w.device).expand(b, -1), images
        if selection == "max_weight":
            index = log_w.argmax(dim=-1)
        else:
            index = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
        return index, images[torch.arange(b, device=log_w.device), index]
