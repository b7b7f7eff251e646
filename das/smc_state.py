"""The SMC sampler's data: the evaluation at the particles, the state between steps, the trace, the result.

:class:`~das.smc.DASSampler` moves an :class:`SMCState` through named stages (resample,
propose, reweight, record); a :class:`TraceRecorder` collects the per-step diagnostics into
an :class:`SMCTrace`, and :class:`SMCResult` holds the samples with that trace. All ``B``
prompts' ``K`` particles live in ``N = B·K`` rows, prompt-major (row ``b·K + k``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from das.resampling import effective_sample_size

_SCALAR_OR_ROWS = ("std", "proposal_std")  # a scalar tensor when the step's std is one, else (N, *event)


def _take(t: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return t if t is None or t.dim() == 0 else t[rows]


def _cat(key: str, parts: list[torch.Tensor]) -> torch.Tensor:
    if key in _SCALAR_OR_ROWS and parts[0].numel() == 1:
        return parts[0].reshape(())
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class Evaluation:
    """What the models and the reward say at the current particles, all `N` rows.

    Attributes:
        reward: `(N,)` float32: ``r(decode(x̂0(x)))`` along the chain, ``r(decode(x))`` at
            its end.
        mean: the adapter's transition mean, `(N, *event)`; None at the end of the chain.
        std: its std, a scalar tensor or `(N, *event)`; None at the end of the chain.
        grad: ``∇_x r(decode(x̂0(x)))``, `(N, *event)`; None without gradients.
        proposal_mean: the proposal adapter's transition mean, `(N, *event)`; None without one.
        proposal_std: its std, a scalar tensor or `(N, *event)`; None without one.
        images: the decoded particles, `(N, ...)`; only at the end of the chain.
    """

    reward: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    proposal_mean: torch.Tensor | None = None
    proposal_std: torch.Tensor | None = None
    images: torch.Tensor | None = None

    def take(self, rows: torch.Tensor) -> Evaluation:
        """The evaluation at the particles `rows` `(N,)` (after resampling); scalar stds stay scalars."""
        return Evaluation(**{f.name: _take(getattr(self, f.name), rows) for f in fields(self)})

    @classmethod
    def concat(cls, chunks: list[dict[str, torch.Tensor]]) -> Evaluation:
        """Joins the evaluations of consecutive row chunks, each a dict of the fields it has (one chunk: no copy)."""
        return cls(**{key: _cat(key, [chunk[key] for chunk in chunks]) for key in chunks[0]})


@dataclass
class SMCState:
    """The particle system between two steps.

    Attributes:
        x: the particles, `(N, *event)`.
        log_weights: normalized log-weights, `(B, K)`.
        lam: ``λ`` of the twist at `x`, `(B,)`.
        evaluation: the :class:`Evaluation` at `x`.
        log_normalizer: the running estimate of ``log E_pre[exp(λ r/α)]``, `(B,)`.
        degenerate_steps: per prompt, the steps whose weights had no finite entry, `(B,)`.
        step: the chain's transitions the particles have taken (0 at ``x_T``).
    """

    x: torch.Tensor
    log_weights: torch.Tensor
    lam: torch.Tensor
    evaluation: Evaluation
    log_normalizer: torch.Tensor
    degenerate_steps: torch.Tensor
    step: int = 0

    @property
    def reward(self) -> torch.Tensor:
        """The twist's reward at the particles, `(B, K)`."""
        return self.evaluation.reward.view_as(self.log_weights)

    def take(self, rows: torch.Tensor, log_weights: torch.Tensor) -> SMCState:
        """The state with particles `rows` `(N,)` (resampled) and the given log-weights `(B, K)`."""
        return replace(self, x=self.x[rows], evaluation=self.evaluation.take(rows), log_weights=log_weights)


@dataclass
class SMCTrace:
    """Diagnostics of one sampler call, per prompt (``T`` steps).

    Attributes:
        ess: ESS before each step's resampling decision and after the final weighting,
            `(T + 1, B)`.
        lam: ``λ`` of the twist at ``x_T`` and after each step, `(T + 1, B)`.
        resampled: whether each prompt resampled at each step, `(T, B)`.
        reward: weighted mean of the twist's reward ``r(x̂0(x_t))`` at ``x_T`` and after each
            step (the exact reward after the last), `(T + 1, B)`.
        degenerate_steps: per prompt, the steps whose weights had no finite entry and fell
            back to uniform, `(B,)`.
    """

    ess: torch.Tensor
    lam: torch.Tensor
    resampled: torch.Tensor
    reward: torch.Tensor
    degenerate_steps: torch.Tensor


@dataclass
class TraceRecorder:
    """Collects an :class:`SMCTrace` step by step; lists of `(B,)` tensors, stacked at the end."""

    ess: list[torch.Tensor] = field(default_factory=list)
    lam: list[torch.Tensor] = field(default_factory=list)
    resampled: list[torch.Tensor] = field(default_factory=list)
    reward: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def start(cls, state: SMCState) -> TraceRecorder:
        """A recorder holding ``λ`` and the weighted mean reward of the initial `state` (at ``x_T``)."""
        recorder = cls()
        recorder._record_state(state)
        return recorder

    def record(self, ess: torch.Tensor, resampled: torch.Tensor, state: SMCState) -> None:
        """Records one step: its ESS before resampling, the prompts that resampled, and the new `state`."""
        self.ess.append(ess)
        self.resampled.append(resampled)
        self._record_state(state)

    def _record_state(self, state: SMCState) -> None:
        self.lam.append(state.lam)
        self.reward.append((state.log_weights.exp() * state.reward).sum(-1))

    def finish(self, state: SMCState) -> SMCTrace:
        """The trace, ending with the final `state`'s ESS and its degenerate-step counts."""
        ess = effective_sample_size(state.log_weights, normalized=True)
        return SMCTrace(
            ess=torch.stack([*self.ess, ess]),
            lam=torch.stack(self.lam),
            resampled=torch.stack(self.resampled),
            reward=torch.stack(self.reward),
            degenerate_steps=state.degenerate_steps,
        )


def _from_trace(name: str, shape: str) -> property:
    """A read-only property of :class:`SMCResult` that reads ``trace.<name>``."""

    def read(self: SMCResult) -> torch.Tensor:
        return getattr(self.trace, name)

    read.__doc__ = f"``trace.{name}``, `{shape}`."
    return property(read)


@dataclass(init=False)
class SMCResult:
    """Everything one sampler call produced: the samples, and the diagnostics in :attr:`trace`.

    Attributes:
        samples: final particles ``x_0``, `(B, K, *event_shape)`.
        images: decoded particles, `(B, K, ...)` (vectors for the toys).
        rewards: reward of each decoded particle, `(B, K)`.
        log_weights: normalized final log-weights, `(B, K)`.
        log_normalizer: estimate of ``log E_pre[exp(r/α)]`` per prompt, `(B,)`.
        selected_index: the chosen particle per prompt, `(B,)`, or all of them, `(B, K)`.
        selected: the chosen images, `(B, ...)`, or all, `(B, K, ...)`.
        trace: the :class:`SMCTrace`; its fields also read as ``ess``, ``lam``, ``resampled``,
            ``reward_trace`` and ``degenerate_steps``.

    Built with ``trace=`` or, as before the trace existed, with the trace's fields as keywords
    (``ess=..., lam=..., resampled=..., reward_trace=..., degenerate_steps=...``).
    """

    samples: torch.Tensor
    images: torch.Tensor
    rewards: torch.Tensor
    log_weights: torch.Tensor
    log_normalizer: torch.Tensor
    selected_index: torch.Tensor
    selected: torch.Tensor
    trace: SMCTrace

    def __init__(
        self,
        *,
        samples: torch.Tensor,
        images: torch.Tensor,
        rewards: torch.Tensor,
        log_weights: torch.Tensor,
        log_normalizer: torch.Tensor,
        selected_index: torch.Tensor,
        selected: torch.Tensor,
        trace: SMCTrace | None = None,
        **trace_fields: torch.Tensor,
    ):
        self.samples, self.images, self.rewards = samples, images, rewards
        self.log_weights, self.log_normalizer = log_weights, log_normalizer
        self.selected_index, self.selected = selected_index, selected
        if trace is None:
            if "reward_trace" in trace_fields:
                trace_fields["reward"] = trace_fields.pop("reward_trace")
            trace = SMCTrace(**trace_fields)
        elif trace_fields:
            raise TypeError(f"SMCResult takes trace= or the trace's fields, not both: {sorted(trace_fields)}.")
        self.trace = trace

    @property
    def weights(self) -> torch.Tensor:
        """Normalized final weights, `(B, K)`."""
        return self.log_weights.exp()

    ess = _from_trace("ess", "(T + 1, B)")
    lam = _from_trace("lam", "(T + 1, B)")
    resampled = _from_trace("resampled", "(T, B)")
    reward_trace = _from_trace("reward", "(T + 1, B)")
    degenerate_steps = _from_trace("degenerate_steps", "(B,)")
