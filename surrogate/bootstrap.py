"""Bootstrap ensemble: M MLP heads on bootstrap resamples, trained in one vectorized pass.

The heads are one :class:`~surrogate.mlp.BatchedMLP` with stacked `(M, in, out)` weights;
each head draws its own bootstrap resample (with replacement) of the shuffled training
split and its own initialization, and all heads take their Adam steps together.

* ``posterior``: mean over heads and std over heads (``correction=1``, i.e. the sample std);
  with ``observation_noise=True`` the validation noise variance is added.
* ``optimistic``: ``optimism="max"`` (reference: max over heads) or ``"std"``
  (mean + `β`·std).
* evaluation: the mean (:meth:`Surrogate.mean`).
* Thompson sampling: :meth:`BootstrapEnsembleSurrogate.thompson` draws one head with a
  generator and returns a callable scoring with that head only; or
  :meth:`set_active_head` makes ``optimistic`` use one head until reset with ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from surrogate.base import Standardizer, Surrogate, as_feature_matrix, make_generator
from surrogate.checkpoint import TensorInfo
from surrogate.mlp import (
    DEFAULT_HIDDEN,
    BatchedMLP,
    check_mlp_loaded,
    fit_batched_mlp,
    mlp_expected_tensors,
    split_indices,
)

OPTIMISM_MODES = ("max", "std")


class BootstrapEnsembleSurrogate(Surrogate):
    """M bootstrapped MLP heads.

    Args:
        input_dim: Feature dimension `D`.
        num_heads: Number of heads `M` (reference: 4).
        hidden: Hidden widths of every head.
        dropout: Dropout probability during training.
        optimism: ``"max"`` (max over heads, reference) or ``"std"`` (mean + β·std).
        beta: Multiplier of the std for ``optimism="std"``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size per head.
        max_epochs: Epoch cap.
        patience: Early-stopping patience (per head; the loop ends when all stopped).
        val_fraction: Shuffled held-out fraction shared by the heads.
        dtype: ``"float32"`` or ``"float64"``.
    """

    kind = "bootstrap"

    def __init__(
        self,
        input_dim: int,
        num_heads: int = 4,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout: float = 0.1,
        optimism: str = "max",
        beta: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        val_fraction: float = 0.1,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        super().__init__(input_dim, dtype)
        if optimism not in OPTIMISM_MODES:
            raise ValueError(f"Unknown optimism {optimism!r}; valid: {list(OPTIMISM_MODES)}.")
        if num_heads < 2:
            raise ValueError(f"A bootstrap ensemble needs num_heads >= 2, got {num_heads}.")
        self._hparams.update(
            num_heads=int(num_heads), hidden=[int(h) for h in hidden], dropout=float(dropout), optimism=optimism,
            beta=float(beta), lr=float(lr), weight_decay=float(weight_decay), batch_size=int(batch_size),
            max_epochs=int(max_epochs), patience=int(patience), val_fraction=float(val_fraction),
        )
        self.num_heads = int(num_heads)
        self.optimism = optimism
        self.beta = float(beta)
        self.train_kwargs = dict(lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience)
        self.val_fraction = float(val_fraction)
        self.net = BatchedMLP(input_dim, hidden, num_heads=num_heads, dropout=dropout, generator=torch.Generator().manual_seed(0), dtype=self.dtype)
        self.net.eval()
        self.x_norm = Standardizer(input_dim, self.dtype)
        self.y_norm = Standardizer(1, self.dtype)
        self.noise_std = 1.0
        self.active_head: int | None = None

    def fit(
        self,
        features: torch.Tensor,
        rewards: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        round: int | None = None,
        warm_start: bool = False,
    ) -> dict[str, Any]:
        """Fit all heads on bootstrap resamples of the training split, in one vectorized loop.

        Args:
            features: `(N, D)`.
            rewards: `(N,)`.
            generator: CPU generator for init, split, resamples, shuffling and dropout.
            seed: Used when ``generator`` is None.
            round: Outer-loop round stored in the checkpoint header.
            warm_start: Start from the current weights and standardization.
        """
        g = make_generator(generator, seed)
        x, y = self._prepare_data(features, rewards)
        warm = warm_start and self.fitted
        if not warm:
            self.x_norm = Standardizer(self.input_dim, self.dtype).fit(x)
            self.y_norm = Standardizer(1, self.dtype).fit(y)
            self.net.reset_parameters(g)
        self._move(x.device)
        xz, yz = self.x_norm.transform(x), self.y_norm.transform(y.unsqueeze(-1)).squeeze(-1)
        train, val = split_indices(x.shape[0], self.val_fraction, g)
        resample = torch.randint(0, train.numel(), (self.num_heads, train.numel()), generator=g)
        train_index = train[resample].to(x.device)  # (M, n_train), with replacement
        info = fit_batched_mlp(self.net, xz, yz, train_index, val.to(x.device), generator=g, **self.train_kwargs)
        mse = torch.tensor(info["best_val_mse"], dtype=torch.float64).mean().clamp_min(1e-12)
        self.noise_std = float(mse.sqrt()) * float(self.y_norm.std[0])
        self.n_data = int(x.shape[0])
        if round is not None:
            self.round = int(round)
        self.fitted = True
        self.fit_info = {**info, "noise_std": self.noise_std, "warm_start": warm}
        return self.fit_info

    def head_predictions(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's prediction in reward units: `(..., D)` -> `(M, ...)`."""
        self._check_fitted()
        x, lead = as_feature_matrix(features, self.input_dim)
        pred = self.net(self.x_norm.transform(x.to(self.dtype)))  # (M, B)
        pred = self.y_norm.inverse(pred.unsqueeze(-1)).squeeze(-1)
        return pred.reshape(self.num_heads, *lead)

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        preds = self.head_predictions(features)
        mean, std = preds.mean(0), preds.std(0, correction=1)
        if observation_noise:
            std = (std**2 + self.noise_std**2).sqrt()
        return mean, std

    def optimistic(self, features: torch.Tensor) -> torch.Tensor:
        preds = self.head_predictions(features)
        if self.active_head is not None:
            return preds[self.active_head]
        if self.optimism == "max":
            return preds.max(0).values
        return preds.mean(0) + self.beta * preds.std(0, correction=1)

    def sample_head(self, generator: torch.Generator) -> int:
        """Draw a head index uniformly with ``generator``."""
        return int(torch.randint(0, self.num_heads, (1,), generator=generator).item())

    def thompson(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
        """Thompson sampling: draw one head and return `features (..., D) -> (...)` using it only."""
        head = self.sample_head(generator)

        def score(features: torch.Tensor) -> torch.Tensor:
            return self.head_predictions(features)[head]

        score.head = head  # type: ignore[attr-defined]
        return score

    def set_active_head(self, head: int | None) -> None:
        """Make ``optimistic`` score with one head (``None`` restores the configured optimism)."""
        if head is not None and not 0 <= head < self.num_heads:
            raise ValueError(f"Head {head} out of range; the ensemble has {self.num_heads} heads.")
        self.active_head = head

    def _move(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.net.to(device)
        self.x_norm.to(device)
        self.y_norm.to(device)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update(self.x_norm.state("x_norm"))
        tensors.update(self.y_norm.state("y_norm"))
        tensors["noise_std"] = torch.tensor([self.noise_std], dtype=torch.float64)
        return tensors

    def _expected_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        return mlp_expected_tensors(self)

    def _check_loaded(self, path: str) -> None:
        check_mlp_loaded(self, path)

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()
        self.x_norm.load_state(tensors, "x_norm")
        self.y_norm.load_state(tensors, "y_norm")
        self.noise_std = float(tensors["noise_std"][0])
        self.fit_info = dict(header.get("extra", {}).get("fit_info", {}))

    def _extra_header(self) -> dict[str, Any]:
        return {"fit_info": self.fit_info}
