"""Bootstrap ensemble: M MLP heads on bootstrap resamples, trained in one vectorized pass.

The heads are one :class:`~surrogate.mlp.BatchedMLP` with stacked `(M, in, out)` weights;
each head draws its own bootstrap resample (with replacement) of the shuffled training
split and its own initialization, and all heads take their Adam steps together.

* ``posterior``: mean over heads and the calibrated epistemic std
  `sqrt(a·s(x)² + b)`, `s(x)` the heads' sample std (``correction=1``); with
  ``observation_noise=True`` the label-noise variance ``noise_std²`` is added. It carries
  every head's prediction (capability ``"heads"``: the reference's optimism is the max over
  heads, :class:`surrogate.acquisition.MaxOverHeads`; mean + `β`·std is
  :class:`surrogate.acquisition.UCB`), and a draw (capability ``"sample"``) is one head chosen
  with the generator (Thompson sampling).
* evaluation: the mean (:meth:`Surrogate.mean`).

Calibration. The raw spread of 4 heads is too narrow: on the 16-d benchmark function (1024
noisy answers, 1024 held-out points) mean ± 2·spread covered the true function at 57% of
held-out points (nominal 95.45%); the heads share the architecture, the early stopping and most
of their data, so they agree on much of their error. The calibrated variance is fitted on the
validation split (shared by all heads, out of every head's resample, used otherwise only for
early stopping): `V` is the held-out error variance of the ensemble mean from
:func:`surrogate.calibration.heldout_variance_split` (validation MSE shrunk towards the reward
variance by one pseudo-point, minus the label-noise variance when ``label_noise_std`` is given,
else all of it counts as model error), and

    `var(x) = V · ((1 − κ)·s(x)²/s̄² + κ)`,   `s̄²` = mean of `s²` over the validation rows,

so that its mean over the held-out rows is `V` (moment matching), with `κ` =
:data:`SPREAD_POOLING` = 0.5: half of it follows each point's spread, half is the pooled value.
The pooling is there because the spread of M = 4 heads is itself a 3-degree-of-freedom estimate:
scaled alone (`κ = 0`) its noise gives the ratio error/std heavy tails. In a prototype (same
rule without the pseudo-point) the 16-d coverage at 50/80/95% was 0.47/0.77/0.90 with `κ = 0`
(fit seed 0; 0.43/0.71/0.86 seed 1), 0.53/0.86/0.97 with `κ = 0.5` and 0.54/0.88/0.98 with
`κ = 1` (a constant std); on colourfulness (256 answers) `κ = 0` gave 0.81-0.83 at 95%, `κ = 0.5`
0.91-0.95. A Gaussian-likelihood scale `mean(r²/s²)`, even fitted on the 16-d test set as an
oracle, covered 0.96 at 95% but 0.68 at 50%. The stored tensors are ``calibration.spread_scale``
`= sqrt(a)`, `a = (1 − κ)V/s̄²`, and ``calibration.floor_std`` `= sqrt(b)`, `b = κV` (reward units), both positive.

Measured (``python -m benchmarks.bench_surrogate --sections calibration --threads 1``,
``benchmarks/results/surrogate.json``; coverage of the truth by mean ± z·std at 50/80/95%):
16-d function 0.54/0.87/0.97 (fit seeds 1-4: 0.93-0.98 at 95%); embedded world (768
pretrained samples' oracle answers with the world's label noise, 256 held-out): JPEG
0.59/0.84/0.94, colourfulness 0.78/0.96/0.99 (0.63/0.89/0.98 when told the noise std 5; half the
held-out error there is label noise, which an unknown-noise fit attributes to the model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from surrogate.base import as_feature_matrix, records_hyperparameters
from surrogate.hyperparameters import integer
from surrogate.mlp import DEFAULT_HIDDEN, MLPSurrogate, mlp_arguments
from surrogate.posterior import Posterior

#: Weight of the pooled (mean) spread variance in the calibrated variance; the rest is the
#: point's own head spread (see the module docstring).
SPREAD_POOLING = 0.5


class BootstrapEnsembleSurrogate(MLPSurrogate):
    """M bootstrapped MLP heads.

    Args:
        input_dim: Feature dimension `D`.
        num_heads: Number of heads `M` (reference: 4).
        hidden: Hidden widths of every head.
        dropout: Dropout probability during training.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size per head.
        max_epochs: Epoch cap.
        patience: Early-stopping patience (per head; the loop ends when all stopped).
        val_fraction: Shuffled held-out fraction shared by the heads.
        dtype: ``"float32"`` or ``"float64"``.
    """

    kind = "bootstrap"
    hyperparameter_specs = {**MLPSurrogate.hyperparameter_specs, "num_heads": integer(2, 256)}
    capabilities = frozenset({"sample", "heads"})
    legacy_hyperparameters = ("optimism", "beta")
    _scalars = {
        "noise_std": "noise_std",
        "calibration.spread_scale": "spread_scale",
        "calibration.floor_std": "floor_std",
    }

    @records_hyperparameters
    def __init__(
        self,
        input_dim: int,
        num_heads: int = 4,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        val_fraction: float = 0.1,
        label_noise_std: float | None = None,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        if num_heads < 2:
            raise ValueError(f"A bootstrap ensemble needs num_heads >= 2, got {num_heads}.")
        super().__init__(num_heads=num_heads, **mlp_arguments(locals()))
        self.num_heads = int(num_heads)
        self.spread_scale = 1.0  # multiplier of the head spread in the calibrated std
        self.floor_std = 0.0  # constant part of the calibrated std, reward units (> 0 once fitted)

    @classmethod
    def legacy_acquisition(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Before 0.2 the optimistic score was the max over heads (``optimism="max"``) or mean + `β`·std."""
        if hyperparameters.get("optimism", "max") == "max":
            return {"kind": "max_heads", "beta": hyperparameters.get("beta", 1.0), "clip": None}
        return {"kind": "ucb", "beta": hyperparameters.get("beta", 1.0), "clip": None}

    def _train_rows(self, train: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A bootstrap resample (with replacement) of the training split per head, `(M, n_train)`."""
        resample = torch.randint(0, train.numel(), (self.num_heads, train.numel()), generator=generator)
        return train[resample]

    def _calibrate(self, xz: torch.Tensor, yz: torch.Tensor, val: torch.Tensor, heldout: bool) -> dict[str, Any]:
        """Set ``noise_std``, ``spread_scale`` and ``floor_std`` from the validation rows (module docstring)."""
        y_scale = float(self.y_norm.std[0])
        with torch.no_grad():
            preds = self.net(xz[val]).double()  # (M, n_val), standardized units
        split = self._noise_split(preds.mean(0) - yz[val].double(), yz, heldout)
        pooled = float(preds.var(0, correction=1).mean())  # mean spread variance over the rows
        epistemic = split["epistemic_var"]
        if pooled > 0 and math.isfinite(pooled):
            spread_weight, floor_var = (1 - SPREAD_POOLING) * epistemic / pooled, SPREAD_POOLING * epistemic
        else:  # identical heads: nothing to shape the std with
            spread_weight, floor_var = 1.0, epistemic
        self.spread_scale = math.sqrt(spread_weight)
        self.floor_std = math.sqrt(floor_var) * y_scale
        return {
            **split,
            "mean_spread_var": pooled,
            "spread_scale": self.spread_scale,
            "floor_std": self.floor_std,
        }

    def head_predictions(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's prediction in reward units: `(..., D)` -> `(M, ...)`."""
        self._check_fitted()
        x, lead = as_feature_matrix(features, self.input_dim)
        pred = self.net(self.x_norm.transform(x.to(self.dtype)))  # (M, B)
        pred = self.y_norm.inverse(pred.unsqueeze(-1)).squeeze(-1)
        return pred.reshape(self.num_heads, *lead)

    def _calibrated_std(self, preds: torch.Tensor, observation_noise: bool = False) -> torch.Tensor:
        """`sqrt(spread_scale²·s² + floor_std² [+ noise_std²])` from head predictions `(M, ...)` -> `(...)`."""
        var = self.spread_scale**2 * preds.var(0, correction=1) + self.floor_std**2
        if observation_noise:
            var = var + self.noise_std**2
        return var.sqrt()

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> Posterior:
        preds = self.head_predictions(features)
        return Posterior(
            preds.mean(0),
            self._calibrated_std(preds, observation_noise),
            sampler=lambda g: preds[self._head(g)],
            heads=preds,
        )

    def _head(self, generator: torch.Generator) -> int:
        """A head index drawn uniformly with ``generator`` (a posterior draw is one head)."""
        return int(torch.randint(0, self.num_heads, (1,), generator=generator).item())
