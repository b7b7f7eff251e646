"""DAS: Sequential Monte Carlo over the denoising chain, batched over prompts × particles.

Samples ``p_tar(x) ∝ p_pre(x) · exp(r(x)/α)`` with no fine-tuning. All ``B`` prompts'
``K`` particles live in one tensor of ``N = B·K`` rows (prompt-major: row ``b·K + k``).
At every step, for every particle:

1. the adapter gives the pretrained transition at ``x_t`` and Tweedie's ``x̂0(x_t)``; the
   reward of the decoded ``x̂0`` defines the log-twist ``ψ_t = λ_t r(x̂0(x_t)) / α``;
2. a prompt whose ESS fell below ``ess_threshold · K`` resamples its particles;
3. the proposal shifts the pretrained mean by ``σ_t² λ_{t-1} ∇_{x_t} r(x̂0(x_t)) / α``
   (no shift for rewards without gradients);
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from das.adapters.base import Conditioning, DenoiserAdapter
from das.resampling import effective_sample_size, get_resampler, normalize_with_log_sum
from das.rewards.base import Reward
from das.tempering import Schedule, TemperingInfo, make_tempering

SELECTIONS = ("max_weight", "sample", "all")


@dataclass
class SMCResult:
    """Everything one sampler call produced.

    Attributes:
        samples: final particles ``x_0``, `(B, K, *event_shape)`.
        images: decoded particles, `(B, K, ...)` (vectors for the toys).
        rewards: reward of each decoded particle, `(B, K)`.
        log_weights: normalized final log-weights, `(B, K)`.
        log_normalizer: estimate of ``log E_pre[exp(r/α)]`` per prompt, `(B,)`.
        ess: ESS before each step's resampling decision and after the final weighting,
            `(T + 1, B)`.
        lam: ``λ`` of the twist at ``x_T`` and after each step, `(T + 1, B)`.
        resampled: whether each prompt resampled at each step, `(T, B)`.
        reward_trace: weighted mean of ``r(x̂0(x_t))`` at ``x_T`` and after each step,
            `(T + 1, B)`.
        degenerate_steps: per prompt, the steps whose weights had no finite entry and fell
            back to uniform, `(B,)`.
        selected_index: the chosen particle per prompt, `(B,)`, or all of them, `(B, K)`.
        selected: the chosen images, `(B, ...)`, or all, `(B, K, ...)`.
    """

    samples: torch.Tensor
    images: torch.Tensor
    rewards: torch.Tensor
    log_weights: torch.Tensor
    log_normalizer: torch.Tensor
    ess: torch.Tensor
    lam: torch.Tensor
    resampled: torch.Tensor
    reward_trace: torch.Tensor
    degenerate_steps: torch.Tensor
    selected_index: torch.Tensor
    selected: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """Normalized final weights, `(B, K)`."""
        return self.log_weights.exp()


@dataclass
class _Evaluation:
    """The adapter, the proposal adapter (if any) and the reward at the current particles (all `N` rows)."""

    mean: torch.Tensor  # (N, *event)
    std: torch.Tensor  # scalar or (N, *event)
    reward: torch.Tensor  # (N,) float32
    grad: torch.Tensor | None  # (N, *event): ∇_x r(decode(x̂0(x)))
    proposal_mean: torch.Tensor | None = None  # (N, *event): the proposal adapter's transition mean
    proposal_std: torch.Tensor | None = None  # scalar or (N, *event)

    def take(self, rows: torch.Tensor) -> _Evaluation:
        """The evaluation at the particles `rows` `(N,)` (after resampling)."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or t.dim() == 0 else t[rows]

        return _Evaluation(
            self.mean[rows],
            pick(self.std),
            self.reward[rows],
            pick(self.grad),
            pick(self.proposal_mean),
            pick(self.proposal_std),
        )


def _full_std(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """A transition's std, detached: kept a scalar when it is one, else broadcast to `mean`'s shape."""
    std = std.detach()
    return std if std.numel() == 1 else torch.broadcast_to(std, mean.shape)


def _cat_std(stds: list[torch.Tensor]) -> torch.Tensor:
    """Joins chunks' stds: a scalar when the step's std is one, else `(N, *event)`."""
    return stds[0].reshape(()) if stds[0].numel() == 1 else torch.cat(stds)


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


def _gradient(reward: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``∇_x Σ reward``; zeros when the reward does not depend on `x`."""
    if not reward.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(reward.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


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
        tempering_start: the step before which ``λ = 0``.
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
        differentiable = bool(getattr(reward, "differentiable", False))
        if use_gradient and not differentiable:
            raise ValueError(
                "use_gradient=True needs a differentiable reward; this one is not (set use_gradient=False)."
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
            kwargs = {"start": tempering_start}
            if tempering == "exponential":
                kwargs["gamma"] = tempering_gamma
            elif tempering == "adaptive":
                kwargs["ess_threshold"] = ess_threshold if ess_threshold > 0 else 0.5
            elif tempering == "none":
                kwargs = {}
            tempering = make_tempering(tempering, **kwargs)
        self.tempering = tempering
        self.selection = selection
        self.use_gradient = differentiable if use_gradient is None else bool(use_gradient)
        self.max_chunk_rows = max_chunk_rows
        self.progress = progress

    # ------------------------------------------------------------------ evaluation
    def _evaluate(
        self, x: torch.Tensor, step: int, conds: tuple[Conditioning, Conditioning | None], prompts: Sequence[str]
    ) -> _Evaluation:
        """Both transitions, the reward of ``decode(x̂0)`` and its gradient at `x`, chunked.

        Args:
            x: particles, `(N, *event_shape)`.
            step: chain step.
            conds: the adapter's and the proposal adapter's conditioning (None without one),
                `N` rows each.
            prompts: `N` row prompts.
        """
        n = x.shape[0]
        chunk = self.max_chunk_rows or n
        parts: dict[str, list[torch.Tensor]] = {
            "mean": [],
            "std": [],
            "reward": [],
            "grad": [],
            "pmean": [],
            "pstd": [],
        }
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            x_chunk = x[rows].detach().requires_grad_(self.use_gradient)
            cond, proposal_cond = (
                {key: value[rows] for key, value in c.items()} if c is not None else None for c in conds
            )
            with torch.set_grad_enabled(self.use_gradient):
                transition = self.adapter.transition(x_chunk, step, cond)
                reward = self.reward(self.adapter.decode(transition.x0_hat), list(prompts[rows]))
                if self.use_gradient:
                    parts["grad"].append(_gradient(reward, x_chunk))
            if self.proposal_adapter is not None:
                with torch.no_grad():
                    proposal = self.proposal_adapter.transition(x_chunk.detach(), step, proposal_cond)
                parts["pmean"].append(proposal.mean.detach())
                parts["pstd"].append(_full_std(proposal.std, proposal.mean))
            parts["mean"].append(transition.mean.detach())
            parts["std"].append(_full_std(transition.std, transition.mean))
            parts["reward"].append(reward.detach().float())
        return _Evaluation(
            torch.cat(parts["mean"]),
            _cat_std(parts["std"]),
            torch.cat(parts["reward"]),
            torch.cat(parts["grad"]) if parts["grad"] else None,
            torch.cat(parts["pmean"]) if parts["pmean"] else None,
            _cat_std(parts["pstd"]) if parts["pstd"] else None,
        )

    def _final_reward(self, x: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images and their exact reward (no gradient needed)."""
        n = x.shape[0]
        chunk = self.max_chunk_rows or n
        images, rewards = [], []
        with torch.no_grad():
            for start in range(0, n, chunk):
                rows = slice(start, min(start + chunk, n))
                image = self.adapter.decode(x[rows])
                images.append(image)
                rewards.append(self.reward(image, list(prompts[rows])).float())
        return torch.cat(images), torch.cat(rewards)

    # ------------------------------------------------------------------ sampling
    def sample(self, prompts: Sequence[str], generator: torch.Generator | None = None) -> SMCResult:
        """Runs DAS for every prompt at once.

        Args:
            prompts: ``B`` prompts (any strings for unconditional models).
            generator: the source of all randomness (noise, resampling, selection); on the
                adapter's device.

        Returns:
            An :class:`SMCResult`.
        """
        adapter, alpha, k = self.adapter, self.kl_coeff, self.num_particles
        b = len(prompts)
        if b == 0:
            raise ValueError("sample() needs at least one prompt.")
        device = adapter.device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        row_prompts = [p for p in prompts for _ in range(k)]
        conds = self._conditioning(prompts)
        num_steps = adapter.num_steps

        x = adapter.initial_noise(b * k, generator)
        current = self._evaluate(x, 0, conds, row_prompts)
        reward = current.reward.view(b, k)
        zeros = torch.zeros(b, device=device)
        lam = self.tempering(self._info(-1, num_steps, zeros, torch.zeros(b, k, device=device), reward, current, x))
        log_w, log_z = normalize_with_log_sum(lam.unsqueeze(-1) * reward / alpha)  # kept normalized from here on
        log_z = log_z - math.log(k)
        degenerate = torch.zeros(b, device=device, dtype=torch.long)

        traces = {"ess": [], "lam": [lam], "resampled": [], "reward": [(log_w.exp() * reward).sum(-1)]}
        images = final_reward = None
        for step in tqdm(range(num_steps), desc="DAS", disable=not self.progress, leave=False):
            x, reward, current, log_w = self._resample(x, reward, current, log_w, generator, traces)

            # Propose from the twisted transition.
            last = step == num_steps - 1
            info = self._info(step, num_steps, lam, log_w, reward, current, x)
            lam_next = torch.ones_like(lam) if last else self.tempering(info)
            x, log_ratio = self._propose(current, x, lam_next, generator)

            # Twist at the new particles: exact reward at the end, Tweedie's otherwise.
            if last:
                images, final_reward = self._final_reward(x, row_prompts)
                new_reward = final_reward.view(b, k)
            else:
                current = self._evaluate(x, step + 1, conds, row_prompts)
                new_reward = current.reward.view(b, k)
            increment = log_ratio + (lam_next.unsqueeze(-1) * new_reward - lam.unsqueeze(-1) * reward) / alpha
            log_w, log_sum = normalize_with_log_sum(log_w + increment)
            degenerate += (~torch.isfinite(log_sum)).long()
            log_z = log_z + log_sum
            lam, reward = lam_next, new_reward
            traces["lam"].append(lam)
            traces["reward"].append((log_w.exp() * reward).sum(-1))

        traces["ess"].append(effective_sample_size(log_w, normalized=True))
        return self._result(x, images, final_reward, log_w, log_z, degenerate, traces, generator)

    def _conditioning(self, prompts: Sequence[str]) -> tuple[Conditioning, Conditioning | None]:
        """The adapter's and the proposal adapter's (None without one) conditioning, each row repeated ``K`` times."""
        k = self.num_particles

        def encode(adapter: DenoiserAdapter) -> Conditioning:
            return {
                key: value.repeat_interleave(k, dim=0) for key, value in adapter.encode_prompts(list(prompts)).items()
            }

        return encode(self.adapter), None if self.proposal_adapter is None else encode(self.proposal_adapter)

    def _resample(self, x, reward, current, log_w, generator, traces) -> tuple:
        """Resamples the prompts whose ESS fell below the threshold; records ESS and decisions in `traces`.

        Returns:
            The particles `(N, *event)`, rewards `(B, K)`, evaluation and log-weights `(B, K)`
            after resampling.
        """
        b, k = log_w.shape
        ess = effective_sample_size(log_w, normalized=True)
        traces["ess"].append(ess)
        resample = ess < self.ess_threshold * k
        traces["resampled"].append(resample)
        # On the CPU a host check is free and skips the resampling work on quiet steps;
        # on accelerators every prompt resamples on the device and `where` applies it.
        if x.device.type != "cpu" or bool(resample.any()):
            identity = torch.arange(k, device=log_w.device).expand(b, k)
            offsets = (torch.arange(b, device=log_w.device) * k).unsqueeze(-1)  # (B, 1)
            ancestors = torch.where(resample.unsqueeze(-1), self.resample(log_w, generator), identity)
            rows = (ancestors + offsets).reshape(-1)
            x, reward, current = x[rows], reward.reshape(-1)[rows].view(b, k), current.take(rows)
            log_w = torch.where(resample.unsqueeze(-1), torch.full_like(log_w, -math.log(k)), log_w)
        return x, reward, current, log_w

    def _propose(
        self, current: _Evaluation, x: torch.Tensor, lam_next: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Draws ``x_{t-1}`` and returns it with ``log p(x_{t-1}|x_t) − log q(x_{t-1}|x_t)``, `(B, K)` (or 0.0)."""
        k = self.num_particles
        b = x.shape[0] // k
        noise = torch.randn(x.shape, generator=generator, device=self.adapter.device, dtype=x.dtype)
        if current.proposal_mean is not None:
            return self._propose_from_proposal(current, noise, lam_next)
        if current.grad is None:
            return torch.addcmul(current.mean, current.std, noise), 0.0
        # The proposal N(μ + σ²λ∇r/α, σ²) draws x = μ + σ z with z = ε + σλ∇r/α, and
        # log p_pre(x) − log q(x) = (‖ε‖² − ‖z‖²) / 2.
        scale = current.std * self._lam_over_alpha(lam_next, x)
        z = torch.addcmul(noise, scale, current.grad)
        x = torch.addcmul(current.mean, current.std, z)
        return x, 0.5 * (_squared_norm(noise) - _squared_norm(z)).view(b, k)

    def _lam_over_alpha(self, lam_next: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``λ_{t-1}/α`` per particle row, shaped to broadcast over `x` `(N, *event)`."""
        return (
            (lam_next / self.kl_coeff)
            .to(x.dtype)
            .repeat_interleave(self.num_particles)
            .view(-1, *([1] * (x.dim() - 1)))
        )

    def _propose_from_proposal(
        self, current: _Evaluation, noise: torch.Tensor, lam_next: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws from the proposal adapter's (shifted) transition; the exact ratio to the adapter's.

        See :class:`DASSampler`: ``x = μ' + σ' z``, ``z = ε + σ' λ ∇r/α``,
        ``u = (σ' z + μ' − μ)/σ``, log-ratio ``(‖ε‖² − ‖u‖²)/2 + Σ log(σ'/σ)``; elements
        with ``σ = 0`` take ``μ`` and add nothing.
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
        return x, (0.5 * (_squared_norm(noise) - _squared_norm(u)) + log_det).view(-1, k)

    def _result(self, x, images, final_reward, log_w, log_z, degenerate, traces, generator) -> SMCResult:
        """Packs the final particles, weights and traces."""
        b, k = log_w.shape
        samples = x.view(b, k, *x.shape[1:])
        images = images.view(b, k, *images.shape[1:])
        selected_index, selected = self._select(log_w, images, generator)
        return SMCResult(
            samples=samples.detach(),
            images=images.detach(),
            rewards=final_reward.view(b, k),
            log_weights=log_w,
            log_normalizer=log_z,
            ess=torch.stack(traces["ess"]),
            lam=torch.stack(traces["lam"]),
            resampled=torch.stack(traces["resampled"]),
            reward_trace=torch.stack(traces["reward"]),
            degenerate_steps=degenerate,
            selected_index=selected_index,
            selected=selected.detach(),
        )

    def _info(self, step, num_steps, lam, log_w, reward, current, x) -> TemperingInfo:
        """What the tempering schedule sees: weights, rewards and (if it asks) guidance norms."""
        guidance_norm = drift_norm = None
        if getattr(self.tempering, "needs_gradient_norms", False) and current.grad is not None:
            b, k = log_w.shape
            guidance = current.std.float() ** 2 * current.grad.float() / self.kl_coeff
            guidance_norm = guidance.flatten(1).norm(dim=1).view(b, k)
            drift_norm = (current.mean - x).float().flatten(1).norm(dim=1).view(b, k)
        return TemperingInfo(
            step=step,
            num_steps=num_steps,
            lam=lam,
            log_weights=log_w,
            reward_over_alpha=reward / self.kl_coeff,
            guidance_norm=guidance_norm,
            drift_norm=drift_norm,
        )

    def _select(
        self, log_w: torch.Tensor, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = log_w.shape[0]
        if self.selection == "all":
            return torch.arange(self.num_particles, device=log_w.device).expand(b, -1), images
        if self.selection == "max_weight":
            index = log_w.argmax(dim=-1)
        else:
            index = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
        return index, images[torch.arange(b, device=log_w.device), index]
