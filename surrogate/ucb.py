"""MLP + UCB surrogate, with the bonus `β·sqrt(φᵀ A⁻¹ φ)` factorized once per fit.

Bonus (:class:`UCBBonus`). `φ` is the MLP's last hidden layer (16 units in the reference
shape). Two choices of the matrix:

* ``covariance="design"`` (default, textbook linear UCB): `A = λI + Σ_i φ_i φ_iᵀ` over
  the data. It grows with the data, so the bonus at a point shrinks as points near it are
  added and stays put far from them. `sqrt(φᵀA⁻¹φ)` times the noise std `σ̂` is the
  posterior std of a Bayesian linear regression on `φ` (prior precision `λ/σ̂²`), which is
  what :meth:`MLPUCBSurrogate.posterior` returns as ``std``; the bonus is `β·std`.
* ``covariance="normalized"`` (the public SEIKO code): `A = (1/N) Σ_i φ_i φ_iᵀ + λI`, the
  normalized covariance, which does not shrink as data grows. The bonus is then the
  reference's raw `α·sqrt(φᵀ(Σ+λI)⁻¹φ)` (scale 1, no noise std). Reference settings:
  ``beta=0.01, lam=0.001, clip=10.0, bonus_covariance="normalized"``.

Either way the matrix is Cholesky-factorized once per fit (or per :meth:`UCBBonus.update`)
and every call is one batched triangular solve, differentiable in `φ`; the bonus is
clipped at ``clip`` (``None`` disables clipping).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from surrogate.base import Standardizer, Surrogate, as_feature_matrix, make_generator
from surrogate.checkpoint import SurrogateCheckpointError, TensorInfo, tensor_info
from surrogate.mlp import (
    DEFAULT_HIDDEN,
    BatchedMLP,
    check_mlp_loaded,
    fit_batched_mlp,
    mlp_expected_tensors,
    split_indices,
)

BONUS_COVARIANCES = ("design", "normalized")


class UCBBonus:
    """Exploration bonus `min(β · scale · sqrt(φᵀ A⁻¹ φ), clip)` with a cached Cholesky factor.

    Args:
        beta: Multiplier `β` (the reference's `α_ucb`).
        lam: Ridge `λ` added to the matrix.
        covariance: ``"design"`` (`λI + Σφφᵀ`) or ``"normalized"`` (`Σφφᵀ/N + λI`).
        clip: Upper clip of the bonus (``None``: no clip).
        scale: Multiplier of `sqrt(φᵀA⁻¹φ)` giving the std (the noise std `σ̂` for the
            design matrix; 1 reproduces the reference).
    """

    def __init__(
        self,
        beta: float = 1.0,
        lam: float = 1e-3,
        covariance: str = "design",
        clip: float | None = 10.0,
        scale: float = 1.0,
    ) -> None:
        if covariance not in BONUS_COVARIANCES:
            raise ValueError(f"Unknown bonus covariance {covariance!r}; valid: {list(BONUS_COVARIANCES)}.")
        self.beta = float(beta)
        self.lam = float(lam)
        self.covariance = covariance
        self.clip = None if clip is None else float(clip)
        self.scale = float(scale)
        self.gram: torch.Tensor | None = None  # Σ φφᵀ, (H, H)
        self.count = 0
        self.chol: torch.Tensor | None = None  # lower Cholesky factor of A, (H, H)

    def fit(self, phi: torch.Tensor) -> "UCBBonus":
        """Set the data features `φ (N, H)` and factorize `A` once."""
        phi = phi.detach()
        self.gram = phi.T @ phi
        self.count = int(phi.shape[0])
        self._factorize()
        return self

    def update(self, phi_new: torch.Tensor) -> "UCBBonus":
        """Add points `φ_new (n, H)` (rank-n update of the Gram matrix) and refactorize."""
        phi_new = phi_new.detach()
        if self.gram is None:
            return self.fit(phi_new)
        self.gram = self.gram + phi_new.T @ phi_new
        self.count += int(phi_new.shape[0])
        self._factorize()
        return self

    def matrix(self) -> torch.Tensor:
        """The matrix `A (H, H)` whose inverse defines the bonus."""
        if self.gram is None:
            raise RuntimeError("UCBBonus has no data; call fit(phi) first.")
        eye = torch.eye(self.gram.shape[0], dtype=self.gram.dtype, device=self.gram.device)
        if self.covariance == "design":
            return self.gram + self.lam * eye
        return self.gram / max(self.count, 1) + self.lam * eye

    def _factorize(self) -> None:
        # ``torch.linalg.cholesky`` returns a column-major factor; a checkpoint stores it row-major, and
        # ``solve_triangular`` rounds differently for the two layouts (a single query takes another LAPACK
        # path). Keeping the factor row-major in memory too makes a loaded surrogate compute bit-identical
        # outputs and gradients to the one it was saved from.
        self.chol = torch.linalg.cholesky(self.matrix()).contiguous()

    def quadratic(self, phi: torch.Tensor) -> torch.Tensor:
        """`φᵀ A⁻¹ φ` for `φ (..., H)` -> `(...)`, via one triangular solve (differentiable)."""
        if self.chol is None:
            raise RuntimeError("UCBBonus has no data; call fit(phi) first.")
        lead = phi.shape[:-1]
        flat = phi.reshape(-1, phi.shape[-1])
        v = torch.linalg.solve_triangular(self.chol, flat.T, upper=False)  # (H, B): L v = φ
        return (v * v).sum(0).reshape(lead)

    def width(self, phi: torch.Tensor) -> torch.Tensor:
        """`scale · sqrt(φᵀA⁻¹φ)`, `(...)` (the surrogate's epistemic std for the design matrix)."""
        # clamp keeps the gradient finite where φ = 0 (dead ReLUs)
        return self.scale * self.quadratic(phi).clamp_min(1e-30).sqrt()

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        """Bonus `min(β · width(φ), clip)`, `(...)`."""
        bonus = self.beta * self.width(phi)
        return bonus if self.clip is None else bonus.clamp(max=self.clip)

    def to(self, device: torch.device | str) -> "UCBBonus":
        for name in ("gram", "chol"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def state(self) -> dict[str, torch.Tensor]:
        assert self.gram is not None and self.chol is not None
        return {
            "bonus.gram": self.gram,
            "bonus.chol": self.chol,
            "bonus.count": torch.tensor([self.count], dtype=torch.int64),
            "bonus.scale": torch.tensor([self.scale], dtype=torch.float64),
        }

    @staticmethod
    def expected_state(width: int, dtype: torch.dtype) -> dict[str, TensorInfo]:
        """Names, dtypes and shapes of :meth:`state` for features `φ` of ``width`` H in ``dtype``."""
        return {
            "bonus.gram": tensor_info(dtype, (width, width)),
            "bonus.chol": tensor_info(dtype, (width, width)),
            "bonus.count": tensor_info(torch.int64, (1,)),
            "bonus.scale": tensor_info(torch.float64, (1,)),
        }

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gram = tensors["bonus.gram"]
        self.chol = tensors["bonus.chol"]
        self.count = int(tensors["bonus.count"][0])
        self.scale = float(tensors["bonus.scale"][0])

    def check_loaded(self, path: str) -> None:
        """Check a loaded state: a count >= 0, a scale > 0, and a lower-triangular factor of `A`.

        The factor must have a positive diagonal and reproduce :meth:`matrix` to a loose
        tolerance (`|LLᵀ - A| <= 1e-3 · max|A|`), so a corrupted or mismatched factor cannot give
        infinite or meaningless bonuses.

        Raises:
            SurrogateCheckpointError: Naming the tensor and the problem.
        """
        assert self.gram is not None and self.chol is not None
        if self.count < 0:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'bonus.count' must be >= 0, got {self.count}; re-save it."
            )
        if not self.scale > 0:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'bonus.scale' must be > 0, got {self.scale}; re-save it."
            )
        chol, target = self.chol, self.matrix()
        if not (bool((chol.triu(1) == 0).all()) and bool((chol.diagonal() > 0).all())):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'bonus.chol' is not a lower-triangular factor with a positive "
                f"diagonal; re-fit the surrogate and save it again."
            )
        scale = float(target.abs().max())
        if not float((chol @ chol.T - target).abs().max()) <= 1e-3 * scale:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'bonus.chol' is not the Cholesky factor of the matrix its "
                f"'bonus.gram' and hyperparameters give; re-fit the surrogate and save it again."
            )


class MLPUCBSurrogate(Surrogate):
    """MLP regressor with a last-layer UCB bonus.

    ``posterior`` returns the MLP output as the mean and, as std, `σ̂·sqrt(φᵀA⁻¹φ)` (design
    matrix; `σ̂` = the validation RMSE of the best epoch, in reward units) or the reference's
    raw `sqrt(φᵀ(Σ+λI)⁻¹φ)` (normalized switch). ``optimistic`` = mean + `min(β·std, clip)`.
    Inputs and rewards are standardized with statistics stored in the checkpoint.

    Args:
        input_dim: Feature dimension `D`.
        hidden: Hidden widths (reference: ``(1024, 128, 64, 16)``); the last is `φ`.
        dropout: Dropout probability during training.
        beta: Bonus multiplier `β`.
        lam: Ridge `λ` of the bonus matrix.
        bonus_covariance: ``"design"`` (default) or ``"normalized"`` (reference).
        clip: Upper clip of the bonus in reward units (``None``: none).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size.
        max_epochs: Epoch cap.
        patience: Early-stopping patience in epochs.
        val_fraction: Fraction of points held out (shuffled) for early stopping.
        dtype: ``"float32"`` or ``"float64"``.
    """

    kind = "ucb"

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout: float = 0.1,
        beta: float = 1.0,
        lam: float = 1e-3,
        bonus_covariance: str = "design",
        clip: float | None = 10.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        val_fraction: float = 0.1,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        super().__init__(input_dim, dtype)
        self._hparams.update(
            hidden=[int(h) for h in hidden], dropout=float(dropout), beta=float(beta), lam=float(lam),
            bonus_covariance=bonus_covariance, clip=None if clip is None else float(clip), lr=float(lr),
            weight_decay=float(weight_decay), batch_size=int(batch_size), max_epochs=int(max_epochs),
            patience=int(patience), val_fraction=float(val_fraction),
        )
        self.train_kwargs = dict(lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience)
        self.val_fraction = float(val_fraction)
        self.net = BatchedMLP(input_dim, hidden, num_heads=1, dropout=dropout, generator=torch.Generator().manual_seed(0), dtype=self.dtype)
        self.net.eval()
        self.bonus = UCBBonus(beta=beta, lam=lam, covariance=bonus_covariance, clip=clip)
        self.x_norm = Standardizer(input_dim, self.dtype)
        self.y_norm = Standardizer(1, self.dtype)
        self.noise_std = 1.0

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
        """Fit the MLP (early-stopped Adam) on `(N, D)` features and `(N,)` rewards, then factorize `A`.

        Args:
            features: `(N, D)`.
            rewards: `(N,)`.
            generator: CPU generator for init, split, shuffling and dropout.
            seed: Used when ``generator`` is None.
            round: Outer-loop round stored in the checkpoint header.
            warm_start: Start from the current weights (and keep the current input/reward
                standardization) instead of a fresh initialization.
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
        info = fit_batched_mlp(self.net, xz, yz, train.unsqueeze(0).to(x.device), val.to(x.device), generator=g, **self.train_kwargs)
        y_scale = float(self.y_norm.std[0])
        self.noise_std = max(float(info["best_val_mse"][0]), 1e-12) ** 0.5 * y_scale
        with torch.no_grad():
            phi = self.net.features(xz)[0]
        self.bonus.fit(phi)
        self.bonus.scale = self.noise_std if self.bonus.covariance == "design" else 1.0
        self.n_data = int(x.shape[0])
        if round is not None:
            self.round = int(round)
        self.fitted = True
        self.fit_info = {**info, "noise_std": self.noise_std, "warm_start": warm}
        return self.fit_info

    def _phi_and_mean(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        self._check_fitted()
        x, lead = as_feature_matrix(features, self.input_dim)
        xz = self.x_norm.transform(x.to(self.dtype))
        phi = self.net.features(xz)  # (1, B, H)
        mean = self.y_norm.inverse(self.net.head(phi).unsqueeze(-1)).squeeze(-1)[0]
        return phi[0], mean, lead

    def features(self, features: torch.Tensor) -> torch.Tensor:
        """Last hidden layer `φ (..., H)` of the MLP for features `(..., D)`."""
        phi, _, lead = self._phi_and_mean(features)
        return phi.reshape(*lead, phi.shape[-1])

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        phi, mean, lead = self._phi_and_mean(features)
        std = self.bonus.width(phi)
        if observation_noise:
            std = (std**2 + self.noise_std**2).sqrt()
        return mean.reshape(lead), std.reshape(lead)

    def optimistic(self, features: torch.Tensor) -> torch.Tensor:
        phi, mean, lead = self._phi_and_mean(features)
        return (mean + self.bonus(phi)).reshape(lead)

    def _move(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.net.to(device)
        self.x_norm.to(device)
        self.y_norm.to(device)
        self.bonus.to(device)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update(self.x_norm.state("x_norm"))
        tensors.update(self.y_norm.state("y_norm"))
        tensors.update(self.bonus.state())
        tensors["noise_std"] = torch.tensor([self.noise_std], dtype=torch.float64)
        return tensors

    def _expected_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        return {**mlp_expected_tensors(self), **UCBBonus.expected_state(self.net.sizes[-2], self.dtype)}

    def _check_loaded(self, path: str) -> None:
        check_mlp_loaded(self, path)
        self.bonus.check_loaded(path)

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()
        self.x_norm.load_state(tensors, "x_norm")
        self.y_norm.load_state(tensors, "y_norm")
        self.bonus.load_state(tensors)
        self.noise_std = float(tensors["noise_std"][0])
        self.fit_info = dict(header.get("extra", {}).get("fit_info", {}))

    def _extra_header(self) -> dict[str, Any]:
        return {"fit_info": self.fit_info}


class GreedyMLPSurrogate(MLPUCBSurrogate):
    """The MLP surrogate without optimism: ``optimistic == mean`` (`β = 0`).

    Takes the keyword arguments of :class:`MLPUCBSurrogate`; ``beta`` is fixed at 0 (it is
    accepted only as 0, which checkpoint headers record). ``posterior`` still reports the
    last-layer std for diagnostics.

    Args:
        input_dim: Feature dimension `D`.
        beta: Must be 0; the greedy surrogate adds no exploration bonus.
        **kwargs: The other keyword arguments of :class:`MLPUCBSurrogate`.

    Raises:
        ValueError: For a nonzero (or non-numeric) ``beta``.
    """

    kind = "greedy"

    def __init__(self, input_dim: int, *, beta: float = 0.0, **kwargs: Any) -> None:
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or beta != 0:
            raise ValueError(
                f"The 'greedy' surrogate adds no exploration bonus, so beta must be 0, got {beta!r}; "
                f"use kind 'ucb' for an optimistic surrogate."
            )
        super().__init__(input_dim, beta=0.0, **kwargs)

    def optimistic(self, features: torch.Tensor) -> torch.Tensor:
        return self.posterior(features)[0]
