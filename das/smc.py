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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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
    """The adapter and reward at the current particles (all `N` rows)."""

    mean: torch.Tensor  # (N, *event)
    std: torch.Tensor  # scalar or (N, *event)
    reward: torch.Tensor  # (N,) float32
    grad: torch.Tensor | None  # (N, *event): ∇_x r(decode(x̂0(x)))


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
            raise ValueError("use_gradient=True needs a differentiable reward; this one is not (set use_gradient=False).")
        self.adapter = adapter
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
    def _evaluate(self, x: torch.Tensor, step: int, cond: Conditioning, prompts: Sequence[str]) -> _Evaluation:
        """Transition, reward of ``decode(x̂0)`` and its gradient at `x`, chunked."""
        n = x.shape[0]
        chunk = self.max_chunk_rows or n
        means, stds, rewards, grads = [], [], [], []
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            x_chunk = x[rows].detach().requires_grad_(self.use_gradient)
            cond_chunk = {key: value[rows] for key, value in cond.items()}
            with torch.set_grad_enabled(self.use_gradient):
                transition = self.adapter.transition(x_chunk, step, cond_chunk)
                reward = self.reward(self.adapter.decode(transition.x0_hat), list(prompts[rows]))
                if self.use_gradient:
                    grads.append(_gradient(reward, x_chunk))
            means.append(transition.mean.detach())
            std = transition.std.detach()
            stds.append(std if std.numel() == 1 else torch.broadcast_to(std, transition.mean.shape))
            rewards.append(reward.detach().float())
        std = stds[0].reshape(()) if stds[0].numel() == 1 else torch.cat(stds)
        return _Evaluation(torch.cat(means), std, torch.cat(rewards), torch.cat(grads) if grads else None)

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
        n = b * k
        device = adapter.device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        row_prompts = [p for p in prompts for _ in range(k)]
        cond = {key: value.repeat_interleave(k, dim=0) for key, value in adapter.encode_prompts(list(prompts)).items()}
        offsets = (torch.arange(b, device=device) * k).unsqueeze(-1)  # (B, 1)
        identity = torch.arange(k, device=device).expand(b, k)
        num_steps = adapter.num_steps

        x = adapter.initial_noise(n, generator)
        event_dims = tuple(range(1, x.dim()))
        current = self._evaluate(x, 0, cond, row_prompts)
        reward = current.reward.view(b, k)
        zeros = torch.zeros(b, device=device)
        lam = self.tempering(self._info(-1, num_steps, zeros, torch.zeros(b, k, device=device), reward, current, x))
        log_w, log_z = normalize_with_log_sum(lam.unsqueeze(-1) * reward / alpha)  # kept normalized from here on
        log_z = log_z - math.log(k)
        degenerate = torch.zeros(b, device=device, dtype=torch.long)

        ess_trace, lam_trace, resampled_trace = [], [lam], []
        reward_trace = [(log_w.exp() * reward).sum(-1)]
        images = final_reward = None
        for step in tqdm(range(num_steps), desc="DAS", disable=not self.progress, leave=False):
            # Resample the prompts whose ESS fell below the threshold.
            ess = effective_sample_size(log_w, normalized=True)
            ess_trace.append(ess)
            resample = ess < self.ess_threshold * k
            resampled_trace.append(resample)
            # On the CPU a host check is free and skips the resampling work on quiet steps;
            # on accelerators every prompt resamples on the device and `where` applies it.
            if x.device.type != "cpu" or bool(resample.any()):
                ancestors = torch.where(resample.unsqueeze(-1), self.resample(log_w, generator), identity)
                rows = (ancestors + offsets).reshape(-1)
                x, reward = x[rows], reward.reshape(-1)[rows].view(b, k)
                current = _Evaluation(
                    current.mean[rows],
                    current.std if current.std.dim() == 0 else current.std[rows],
                    current.reward[rows],
                    None if current.grad is None else current.grad[rows],
                )
                log_w = torch.where(resample.unsqueeze(-1), torch.full_like(log_w, -math.log(k)), log_w)

            # Propose from the twisted transition.
            last = step == num_steps - 1
            info = self._info(step, num_steps, lam, log_w, reward, current, x)
            lam_next = torch.ones_like(lam) if last else self.tempering(info)
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            if current.grad is not None:
                # The proposal N(μ + σ²λ∇r/α, σ²) draws x = μ + σ z with z = ε + σλ∇r/α, and
                # log p_pre(x) − log q(x) = (‖ε‖² − ‖z‖²) / 2.
                scale = current.std * (lam_next / alpha).to(x.dtype).repeat_interleave(k).view(-1, *([1] * len(event_dims)))
                z = torch.addcmul(noise, scale, current.grad)
                x = torch.addcmul(current.mean, current.std, z)
                log_ratio = 0.5 * (_squared_norm(noise) - _squared_norm(z)).view(b, k)
            else:
                x = torch.addcmul(current.mean, current.std, noise)
                log_ratio = 0.0

            # Twist at the new particles: exact reward at the end, Tweedie's otherwise.
            if last:
                images, final_reward = self._final_reward(x, row_prompts)
                new_reward = final_reward.view(b, k)
            else:
                current = self._evaluate(x, step + 1, cond, row_prompts)
                new_reward = current.reward.view(b, k)
            increment = log_ratio + (lam_next.unsqueeze(-1) * new_reward - lam.unsqueeze(-1) * reward) / alpha
            log_w, log_sum = normalize_with_log_sum(log_w + increment)
            degenerate += (~torch.isfinite(log_sum)).long()
            log_z = log_z + log_sum
            lam, reward = lam_next, new_reward
            lam_trace.append(lam)
            reward_trace.append((log_w.exp() * reward).sum(-1))

        ess_trace.append(effective_sample_size(log_w, normalized=True))
        samples = x.view(b, k, *x.shape[1:])
        images = images.view(b, k, *images.shape[1:])
        selected_index, selected = self._select(log_w, images, generator)
        return SMCResult(
            samples=samples.detach(),
            images=images.detach(),
            rewards=final_reward.view(b, k),
            log_weights=log_w,
            log_normalizer=log_z,
            ess=torch.stack(ess_trace),
            lam=torch.stack(lam_trace),
            resampled=torch.stack(resampled_trace),
            reward_trace=torch.stack(reward_trace),
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

    def _select(self, log_w: torch.Tensor, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = log_w.shape[0]
        if self.selection == "all":
            return torch.arange(self.num_particles, device=log_w.device).expand(b, -1), images
        if self.selection == "max_weight":
            index = log_w.argmax(dim=-1)
        else:
            index = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
        return index, images[torch.arange(b, device=log_w.device), index]
