"""MLP + last-layer surrogate: a calibrated std `s·sqrt(φᵀ A⁻¹ φ)`, the std SEIKO's UCB bonus multiplies.

Width (:class:`UCBBonus`). `φ` is the MLP's last hidden layer (16 units in the reference
shape). Two choices of the matrix:

* ``covariance="design"`` (default, textbook linear UCB): `A = λI + Σ_i φ_i φ_iᵀ` over
  the data. It grows with the data, so the width at a point shrinks as points near it are
  added and stays put far from them. The std :meth:`MLPUCBSurrogate.posterior` returns is
  `s·sqrt(φᵀA⁻¹φ)` with a scale `s` calibrated on held-out data (below); the UCB acquisition
  (:class:`surrogate.acquisition.UCB`) adds `min(β·std, clip)`: the std says how wrong the
  mean may be, `β` how optimistic to be.
* ``covariance="normalized"`` (the public SEIKO code): `A = (1/N) Σ_i φ_i φ_iᵀ + λI`, the
  normalized covariance, which does not shrink as data grows. The std is then the
  reference's raw `sqrt(φᵀ(Σ+λI)⁻¹φ)` (scale 1, not calibrated). Reference settings:
  ``lam=0.001, bonus_covariance="normalized"`` with ``UCB(beta=0.01, clip=10.0)``.

Either way the matrix is Cholesky-factorized once per fit (or per :meth:`UCBBonus.update`)
and every call is one batched triangular solve, differentiable in `φ`.

Calibration (what `s` is, and why). The textbook confidence width of the last-layer Bayesian
linear model, `σ̂·sqrt(φᵀA⁻¹φ)` with `σ̂` the noise std estimated from the data, is what this
surrogate returned before: on the 16-d benchmark function (1024 noisy answers, 1024 held-out
points) its mean ± 2·std covered the true function at 18% of held-out points (nominal 95.45%).
It counts only the uncertainty of the last layer's weights given `φ`; the error of an
early-stopped MLP is mostly approximation error, which `φ` cannot see (there, held-out RMSE
against the truth 0.46 against a median width of 0.05). Estimating the noise from the training
residuals and calling the rest of the held-out error "epistemic" does not help either: the
training and validation MSE agree (0.220 and 0.222), so nothing would be left.

So `s` is fitted on the validation split, the shuffled rows that early stopping already holds
out (they never enter the gradient steps): `s² = V / mean_i w_i²`, where `w_i² = q_i/(1 − q_i)`,
`q_i = φ_iᵀA⁻¹φ_i`, is the squared width each validation row would have as a new point (its own
row removed from `A`, by Sherman-Morrison), and `V` is the held-out error variance of
:func:`surrogate.calibration.heldout_variance_split`: the validation MSE shrunk towards the
reward variance by one pseudo-point, minus the label-noise variance when ``label_noise_std``
is given (else all of it is model error: conservative, since residuals alone cannot tell noise
from error). The mean calibrated variance over the held-out rows thus equals their mean squared
error (moment matching; with the scale fitted on the 16-d test set as an oracle, moment matching
covered 0.943 at 95% and the Gaussian-likelihood scale `mean(r²/w²)` 0.950, which lets rows of
tiny width dominate). Selecting the best epoch on the same rows biases their MSE low: over 8 fit
seeds the geometric mean of the test/validation MSE ratio was 1.06 on the 16-d function (102
validation rows) and 1.0 (JPEG) and 1.3 (colourfulness) on embedded-world data with 256 answers
(26 rows; part of it is the skew of a mean of 26 squares); the pseudo-point and the
unknown-noise convention absorb some of it. The stored ``bonus.scale`` is `s` (reward
units) and ``noise_std`` the label noise (`10⁻³` of the held-out RMSE when unknown), so a
checkpoint reproduces the std bit for bit.

Measured (``python -m benchmarks.bench_surrogate --sections calibration --threads 1``,
``benchmarks/results/surrogate.json``; coverage of the truth by mean ± z·std at 50/80/95%):
16-d function 0.52/0.83/0.96 (fit seeds 1-4: 0.90-0.94 at 95%); embedded world, 768 pretrained
samples' oracle answers with the world's label noise, 256 held-out: JPEG 0.58/0.85/0.93,
colourfulness 0.66/0.88/0.97 (0.47/0.73/0.86 when told the noise std 5: half the held-out error
there is noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from surrogate.base import as_feature_matrix, records_hyperparameters
from surrogate.checkpoint import SurrogateCheckpointError, TensorInfo, tensor_info
from surrogate.hyperparameters import choice, number
from surrogate.mlp import DEFAULT_HIDDEN, MLPSurrogate, mlp_arguments
from surrogate.posterior import Posterior

BONUS_COVARIANCES = ("design", "normalized")


class UCBBonus:
    """The last-layer width `scale · sqrt(φᵀ A⁻¹ φ)` behind the UCB bonus, with a cached Cholesky factor.

    Args:
        lam: Ridge `λ` added to the matrix.
        covariance: ``"design"`` (`λI + Σφφᵀ`) or ``"normalized"`` (`Σφφᵀ/N + λI`).
        scale: Multiplier of `sqrt(φᵀA⁻¹φ)` giving the std (for the design matrix the
            calibrated scale `s` that :class:`MLPUCBSurrogate` fits on held-out data; 1
            reproduces the reference).
    """

    def __init__(self, lam: float = 1e-3, covariance: str = "design", scale: float = 1.0) -> None:
        if covariance not in BONUS_COVARIANCES:
            raise ValueError(f"Unknown bonus covariance {covariance!r}; valid: {list(BONUS_COVARIANCES)}.")
        self.lam = float(lam)
        self.covariance = covariance
        self.scale = float(scale)
        self.gram: torch.Tensor | None = None  # Σ φφᵀ, (H, H)
        self.count = 0
        self.chol: torch.Tensor | None = None  # lower Cholesky factor of A, (H, H)

    def fit(self, phi: torch.Tensor) -> UCBBonus:
        """Set the data features `φ (N, H)` and factorize `A` once."""
        phi = phi.detach()
        self.gram = phi.T @ phi
        self.count = int(phi.shape[0])
        self._factorize()
        return self

    def update(self, phi_new: torch.Tensor) -> UCBBonus:
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

    def to(self, device: torch.device | str) -> UCBBonus:
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


class MLPUCBSurrogate(MLPSurrogate):
    """MLP regressor with a last-layer posterior (the model of SEIKO's UCB, kind ``"ucb"``).

    ``posterior`` returns the MLP output as the mean and, as std, the calibrated epistemic std
    `s·sqrt(φᵀA⁻¹φ)` (design matrix; `s` fitted on the validation split, see the module
    docstring) or the reference's raw `sqrt(φᵀ(Σ+λI)⁻¹φ)` (normalized switch); with
    ``observation_noise=True`` the label-noise variance ``noise_std²`` is added. Its draws
    (capability ``"sample"``) are whole functions from the last layer's posterior. The UCB
    acquisition adds `min(β·std, clip)`; the posterior mean is the greedy score (the pre-0.2
    kind ``"greedy"`` loads as this kind). Inputs and rewards are standardized with statistics
    stored in the checkpoint.

    Args:
        input_dim: Feature dimension `D`.
        hidden: Hidden widths (reference: ``(1024, 128, 64, 16)``); the last is `φ`.
        dropout: Dropout probability during training.
        lam: Ridge `λ` of the bonus matrix.
        bonus_covariance: ``"design"`` (default) or ``"normalized"`` (reference).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size.
        max_epochs: Epoch cap.
        patience: Early-stopping patience in epochs.
        val_fraction: Fraction of points held out (shuffled) for early stopping and for
            calibrating the std (0, or fewer than 10 points: no held-out split, and the std is
            set from the reward variance).
        label_noise_std: The label-noise std in reward units when it is known (e.g. the noise the
            online loop adds to the oracle's answers); ``None``: unknown, and the whole held-out
            error is attributed to the model (a conservative epistemic std).
        dtype: ``"float32"`` or ``"float64"``.
    """

    kind = "ucb"
    hyperparameter_specs = {
        **MLPSurrogate.hyperparameter_specs,
        "lam": number(0.0, low_open=True),
        "bonus_covariance": choice(BONUS_COVARIANCES),
    }
    capabilities = frozenset({"sample"})
    legacy_hyperparameters = ("beta", "clip")
    deprecated_kinds = {"greedy": {"kind": "mean", "beta": 0.0, "clip": 10.0}}
    _movable = ("net", "bonus")

    @records_hyperparameters
    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout: float = 0.1,
        lam: float = 1e-3,
        bonus_covariance: str = "design",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        val_fraction: float = 0.1,
        label_noise_std: float | None = None,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        super().__init__(num_heads=1, **mlp_arguments(locals()))
        self.bonus = UCBBonus(lam=lam, covariance=bonus_covariance)

    @classmethod
    def implied_elements(cls, values: Mapping[str, Any]) -> tuple[str, int, str]:
        """The network's parameters plus the bonus's `H x H` Gram matrix and factor (`H = hidden[-1]`)."""
        field, count, context = super().implied_elements(values)
        return field, count + 2 * int(values["hidden"][-1]) ** 2, context

    @classmethod
    def legacy_acquisition(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Before 0.2 the optimistic score was mean + `min(β·std, clip)` with the model's own ``beta`` and ``clip``."""
        return {"kind": "ucb", "beta": hyperparameters.get("beta", 1.0), "clip": hyperparameters.get("clip", 10.0)}

    def _calibrate(self, xz: torch.Tensor, yz: torch.Tensor, val: torch.Tensor, heldout: bool) -> dict[str, Any]:
        """Factorize the bonus matrix on every row's `φ`, then set ``noise_std`` and the scale `s` (module doc)."""
        with torch.no_grad():
            phi = self.net.features(xz)  # (1, N, H)
            residuals = self.net.head(phi)[0] - yz  # (N,), standardized units
            phi = phi[0]
        self.bonus.fit(phi)
        y_scale = float(self.y_norm.std[0])
        rows = val.to(phi.device)
        split = self._noise_split(residuals[rows], yz, heldout)
        if self.bonus.covariance != "design":  # the reference's raw normalized width, not calibrated
            self.bonus.scale = 1.0
            return {**split, "scale": 1.0, "calibrated": False}
        with torch.no_grad():  # in float64: 1 - q is a difference of nearly equal numbers when N is not >> H
            v = torch.linalg.solve_triangular(self.bonus.chol.double(), phi[rows].double().T, upper=False)
            q = (v * v).sum(0).clamp(0.0, 1.0 - 1e-9)  # φᵀA⁻¹φ < 1 for a row of A
        width2 = float((q / (1.0 - q)).mean())  # squared widths as if each row were not in A (Sherman-Morrison)
        scale = math.sqrt(split["epistemic_var"] / width2) * y_scale if width2 > 0 else y_scale
        self.bonus.scale = scale if math.isfinite(scale) and scale > 0 else y_scale
        return {**split, "mean_unit_width2": width2, "scale": self.bonus.scale, "calibrated": True}

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

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> Posterior:
        phi, mean, lead = self._phi_and_mean(features)
        std = self.bonus.width(phi)
        if observation_noise:
            std = (std**2 + self.noise_std**2).sqrt()
        return Posterior(mean.reshape(lead), std.reshape(lead), sampler=lambda g: self._draw(phi, mean, lead, g))

    def _draw(
        self, phi: torch.Tensor, mean: torch.Tensor, lead: torch.Size, generator: torch.Generator
    ) -> torch.Tensor:
        """One function from the last-layer posterior at `φ`: `mean + s·(L⁻¹φ)ᵀz`, `z ~ N(0, I_H)` from ``generator``.

        The last layer's weights are drawn as `w̃ = ŵ + s·L⁻ᵀz`, where `LLᵀ = A` and `s` is the
        calibrated scale, so the draw is a whole function (the same `z`, hence the same generator
        state, gives the same function at any point), whose spread at `x` is the posterior's std.
        """
        chol = self.bonus.chol
        z = torch.randn(chol.shape[0], generator=generator, dtype=torch.float64).to(
            device=chol.device, dtype=chol.dtype
        )
        v = torch.linalg.solve_triangular(chol, phi.reshape(-1, phi.shape[-1]).T, upper=False)  # (H, B)
        return (mean.reshape(-1) + self.bonus.scale * (v.T @ z)).reshape(lead)

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._model_tensors(), **self.bonus.state()}

    def _expected_model_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        expected = super()._expected_model_tensors(table, header, path)
        return {**expected, **UCBBonus.expected_state(self.net.sizes[-2], self.dtype)}

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        super()._load_model_tensors(tensors, header)
        self.bonus.load_state(tensors)

    def _check_loaded(self, path: str) -> None:
        self.bonus.check_loaded(path)
