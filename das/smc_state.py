"""The SMC sampler's data: the evaluation at the particles, the state between steps, the trace, the result.

:class:`~das.smc.DASSampler` builds an :class:`SMCState` (``init``) and moves it one
transition at a time (``step``: resample, propose, reweight), reporting each transition as a
:class:`StepInfo`; the state carries its prompts' conditioning (:class:`PromptBatch`) and the
diagnostics so far (:class:`TraceRecorder`), and ``finish`` turns it into an
:class:`SMCResult` with its :class:`SMCTrace`. All ``B`` prompts' ``K`` particles live in
``N = B·K`` rows, prompt-major (row ``b·K + k``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from das.adapters.base import Conditioning
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


@dataclass(frozen=True)
class PromptBatch:
    """One chain's prompts: `N` row prompts and the adapters' conditioning, each prompt's row repeated ``K`` times.

    Attributes:
        num_prompts: ``B``.
        row_prompts: the `N` row prompts.
        conds: the adapter's conditioning and the proposal adapter's (None without one), `N` rows each.
    """

    num_prompts: int
    row_prompts: list[str]
    conds: tuple[Conditioning, Conditioning | None]


@dataclass(frozen=True)
class StepInfo:
    """What one transition did, per prompt (what ``step`` returns beside the state, and the callback gets).

    Attributes:
        step: the transitions the particles have taken after this one (1 after the first).
        ess: the ESS before this step's resampling decision, `(B,)`.
        resampled: whether each prompt resampled, `(B,)` bool.
        lam: ``λ`` of the twist at the new particles, `(B,)`.
        reward: the weighted mean of the twist's reward at the new particles (the exact reward
            after the last transition), `(B,)`.
        log_increment: the log of the mean incremental weight, added to ``log Z``, `(B,)`.
    """

    step: int
    ess: torch.Tensor
    resampled: torch.Tensor
    lam: torch.Tensor
    reward: torch.Tensor
    log_increment: torch.Tensor


@dataclass(frozen=True)
class TraceRecorder:
    """The per-step diagnostics of a chain so far; tuples of `(B,)` tensors, stacked by :meth:`finish`.

    Immutable: :meth:`record` returns a new recorder, so a state stepped twice keeps its own trace.
    """

    ess: tuple[torch.Tensor, ...] = ()
    lam: tuple[torch.Tensor, ...] = ()
    resampled: tuple[torch.Tensor, ...] = ()
    reward: tuple[torch.Tensor, ...] = ()

    @classmethod
    def start(cls, lam: torch.Tensor, reward: torch.Tensor) -> TraceRecorder:
        """A recorder holding ``λ`` `(B,)` and the weighted mean reward `(B,)` at ``x_T``."""
        return cls(lam=(lam,), reward=(reward,))

    def record(self, info: StepInfo) -> TraceRecorder:
        """This trace followed by one step."""
        return TraceRecorder(
            ess=(*self.ess, info.ess),
            lam=(*self.lam, info.lam),
            resampled=(*self.resampled, info.resampled),
            reward=(*self.reward, info.reward),
        )

    def finish(self, log_weights: torch.Tensor, degenerate_steps: torch.Tensor) -> SMCTrace:
        """The trace, ending with the ESS of the final normalized `log_weights` `(B, K)`."""
        ess = effective_sample_size(log_weights, normalized=True)
        return SMCTrace(
            ess=torch.stack([*self.ess, ess]),
            lam=torch.stack(self.lam),
            resampled=torch.stack(self.resampled),
            reward=torch.stack(self.reward),
            degenerate_steps=degenerate_steps,
        )


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
        batch: the prompts and their conditioning.
        trace: the diagnostics of the steps so far.
    """

    x: torch.Tensor
    log_weights: torch.Tensor
    lam: torch.Tensor
    evaluation: Evaluation
    log_normalizer: torch.Tensor
    degenerate_steps: torch.Tensor
    step: int
    batch: PromptBatch
    trace: TraceRecorder = TraceRecorder()

    @property
    def reward(self) -> torch.Tensor:
        """The twist's reward at the particles, `(B, K)`."""
        return self.evaluation.reward.view_as(self.log_weights)

    @property
    def weighted_reward(self) -> torch.Tensor:
        """The weighted mean of :attr:`reward` per prompt, `(B,)`."""
        return (self.log_weights.exp() * self.reward).sum(-1)

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


def _from_trace(name: str, shape: str) -> property:
    """A read-only property of :class:`SMCResult` that reads ``trace.<name>``."""

    def read(self: SMCResult) -> torch.Tensor:
        return getattr(self.trace, name)

    read.__doc__ = f"``trace.{name}``, `{shape}`."
    return property(read)


@dataclass
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
        trace: the :class:`SMCTrace`; its fields ``ess``, ``lam``, ``resampled`` and
            ``degenerate_steps`` also read as attributes of the result.
    """

    samples: torch.Tensor
    images: torch.Tensor
    rewards: torch.Tensor
    log_weights: torch.Tensor
    log_normalizer: torch.Tensor
    selected_index: torch.Tensor
    selected: torch.Tensor
    trace: SMCTrace

    @property
    def weights(self) -> torch.Tensor:
        """Normalized final weights, `(B, K)`."""
        return self.log_weights.exp()

    ess = _from_trace("ess", "(T + 1, B)")
    lam = _from_trace("lam", "(T + 1, B)")
    resampled = _from_trace("resampled", "(T, B)")
    degenerate_steps = _from_trace("degenerate_steps", "(B,)")
