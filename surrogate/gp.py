"""Gaussian-process surrogate on (optionally PCA-reduced) features: exact when small, sparse beyond.

Pipeline, all as differentiable torch ops at prediction time (float64 inside):

1. optional PCA (scikit-learn, fitted on the data when ``input_dim > pca_dim``); only its
   ``components_`` `(k, D)` and ``mean_`` `(D,)` are kept, as tensors, and stored in the
   checkpoint (the sklearn object is never pickled);
2. min-max scaling of the projected inputs to the unit cube of the training data;
3. rewards standardized by our own statistics (``outcome_transform=None`` in botorch);
4. one of two GPs, both with a constant mean, an ARD RBF kernel without output scale under
   the dimension-scaled log-normal lengthscale prior of Hvarfner et al. (2024), and Gaussian
   noise under a LogNormal(-4, 1) prior (botorch 0.18's defaults):

   * **exact**: botorch's ``SingleTaskGP``, fitted by ``fit_gpytorch_mll`` (L-BFGS-B on the
     exact marginal likelihood, forced to Cholesky for every size, at most ``max_iter``
     iterations); `O(N³)` time per iteration, `O(N²)` memory;
   * **sparse**: a stochastic variational GP on *every* point: gpytorch ``ApproximateGP``
     with a whitened ``VariationalStrategy`` over `m = min(inducing_points, N)` learned
     inducing inputs (initialized at a random subset of the training inputs) and a
     full-covariance ``CholeskyVariationalDistribution``, trained by Adam on mini-batches of
     ``batch_size`` points for ``epochs`` passes. `O(N·m²)` time per pass,
     `O(batch_size·m + m²)` memory beyond the data; a prediction needs only the inducing
     inputs and `q(u)` (no training data), `O(m²)` per query. Its constraints are
     softplus-transformed (Adam has no bounds; the exact fit keeps botorch's untransformed
     ones).

Which GP (``method``): ``"auto"`` (default) fits the exact GP when `N <= max_points` (the
better model with few points; the online loop's first rounds and the tests use it) and the
sparse GP on all `N` points beyond; ``"exact"`` always fits the exact GP, on a uniformly
random subset of ``max_points`` points drawn with the fit generator when given more (with a
``UserWarning``: the only case where answers are dropped, and only on request); ``"sparse"``
always fits the sparse GP. With the default ``inducing_points = max_points = 512`` the sparse
GP just above the switch has as many inducing points as the exact GP had data.

What trains the sparse GP's kernel, noise and mean (``objective``):

* ``"mll_subset"`` (default): the exact GP's marginal likelihood on a random subset of
  ``max_points`` points (the same L-BFGS-B fit as above); then, with those fixed, the
  mini-batch ``VariationalELBO`` on every point trains the inducing inputs and `q(u)`, and
  `q(u)` is finally set to its closed-form ELBO optimum over every point (Titsias, 2009).
  The posterior mean and std use every answer; only the `k + 2` hyperparameters come from
  a subset, which estimates them well;
* ``"elbo"``: everything by the mini-batch ``VariationalELBO`` (Hensman et al., 2013), then
  the closed-form `q(u)`;
* ``"pll"``: everything by gpytorch's ``PredictiveLogLikelihood`` (PPGPR, Jankowiak et al.,
  2020).

All three start `q(u)` at its closed-form optimum. The default is chosen on calibration, which
the sampler's optimism relies on (``benchmarks/results/gp.json``: the fraction of held-out
points whose noiseless value lies in mean ± 2·std, nominal 0.954). On the 16-d function of
``benchmarks/bench_surrogate.py`` (1024 train) the ELBO explains what the inducing points
cannot fit as noise, so its epistemic std is too small, and more so the longer it trains (0.90
after the default 20 epochs, 0.80 after 100); the PLL moves the noise into the latent std, which
then stops shrinking with data (on a smooth 3-d function, 2048 train, noise std 0.1: median std
0.15, above the noise's, coverage 1.0, RMSE 0.071); ``"mll_subset"`` behaves like the exact GP
on both (0.97 and 0.93, the exact GP on 512 points 0.955 and 0.93) with the lowest error of the
three (RMSE 0.405 and 0.015; ELBO 0.457 and 0.021; exact GP on 512 points 0.446 and 0.027).

``posterior`` is the GP posterior (exact: no LOVE / fast variances; sparse: `q(f)`) with its
variance multiplied by a calibrated scale `s` (below); the UCB acquisition adds `β`·std to the mean.
``joint_posterior`` is the same posterior jointly over a set of points (mean and covariance, the
same scale `s`; capability ``"joint"``), which makes :mod:`surrogate.batch_selection`'s batch rules
aware of how a batch's points are correlated.

Calibration of the epistemic std. The marginal likelihood explains what the kernel cannot fit
as noise, so on embedded-world data the GP's posterior std is too narrow against the noise-free
answers (95% coverage 0.75 on the JPEG oracle, 0.82 on colourfulness) although its predictive
std covers the noisy ones. As the MLP surrogates do (:mod:`surrogate.ucb`), the fit therefore
matches the held-out squared errors to the epistemic variance: with the leave-one-out residuals
`r_i` and epistemic variances `v_i` of every training point (closed form, no refit: exact GP,
`r_i = [C y]_i / C_ii` and `v_i = 1 / C_ii − σ²` with `C = (K + σ² I)⁻¹`; sparse GP, the
Bayesian linear model in the whitened inducing features `a_i` of the closed-form `q(u)`, where
`r_i = (y_i − μ_i) / (1 − h_i)` and `v_i = 1 − a_iᵀa_i + a_iᵀ S a_i / (1 − h_i)`,
`h_i = a_iᵀ S a_i / σ²`), :func:`surrogate.calibration.heldout_variance_split` gives the error
variance `E` (shrunk towards the reward variance by one pseudo-point) and its epistemic part `V`
(`E` minus the label-noise variance when ``label_noise_std`` is known, all of `E` when not), and
`s = V / mean(v_i)`. The predictive std adds the likelihood's noise to the scaled variance. The
sparse GP trained by the PLL (whose `q(u)` is not the closed form) keeps `s = 1`.

Sizes and times on this repo's shared 2-core CPU box: the exact fit on 768-d features reduced
to 32 PCA dims took 9 s at N=256, 12 s at N=512, 30 s at N=1024 and 207 s at N=2048
(``benchmarks/results/surrogate.json``, 1 thread, load average ~3), hence the default
``max_points=512``. The sparse fit on all N=4096 such points (``benchmarks/results/gp.json``)
took 6 s with 2 threads and 9.5 s with 1 on an otherwise idle box, but 53 to 69 s with 2
threads while another job used the cores (1 thread: 9 to 16 s): with oversubscribed cores,
OpenMP's spinning threads dominate; ``OMP_WAIT_POLICY=PASSIVE`` or 1 thread avoids that.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import gpytorch
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.constraints import GreaterThan
from gpytorch.mlls import ExactMarginalLogLikelihood, PredictiveLogLikelihood, VariationalELBO
from gpytorch.priors import LogNormalPrior
from linear_operator.utils.cholesky import psd_safe_cholesky
from sklearn.decomposition import PCA

from surrogate.base import Standardizer, Surrogate, as_feature_matrix, draw_seed, records_hyperparameters
from surrogate.calibration import heldout_variance_split
from surrogate.checkpoint import SurrogateCheckpointError, TensorInfo, tensor_info
from surrogate.hyperparameters import choice, integer, number
from surrogate.posterior import Posterior

_CHOLESKY_ALWAYS = 1_000_000

#: Valid values of ``GPSurrogate(method=...)``.
GP_METHODS = ("auto", "exact", "sparse")
#: Valid values of ``GPSurrogate(objective=...)`` (the sparse GP's training objective).
GP_OBJECTIVES = ("mll_subset", "elbo", "pll")

_MIN_LENGTHSCALE = 2.5e-2  # botorch's lower bound on the lengthscale
_MIN_NOISE = 1e-4  # botorch's MIN_INFERRED_NOISE_LEVEL


def _lengthscale_prior(k: int) -> LogNormalPrior:
    """The dimension-scaled lengthscale prior of Hvarfner et al. (2024) for `k` inputs (botorch's default)."""
    return LogNormalPrior(loc=math.sqrt(2.0) + 0.5 * math.log(k), scale=math.sqrt(3.0))


class SparseGPModel(gpytorch.models.ApproximateGP):
    """Stochastic variational GP over `m` learned inducing points in `k` input dimensions.

    Whitened ``VariationalStrategy``, full-covariance ``CholeskyVariationalDistribution``,
    constant mean, ARD RBF kernel (no output scale) under the dimension-scaled log-normal
    lengthscale prior; the Gaussian likelihood lives beside it (:func:`sparse_likelihood`),
    so that its prior is counted once by the variational objectives.

    Args:
        inducing_points: Initial inducing inputs `(m, k)`; their dtype is the model's.
    """

    def __init__(self, inducing_points: torch.Tensor) -> None:
        m, k = inducing_points.shape
        distribution = gpytorch.variational.CholeskyVariationalDistribution(m)
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        prior = _lengthscale_prior(k)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.RBFKernel(
            ard_num_dims=k,
            lengthscale_prior=prior,
            lengthscale_constraint=GreaterThan(_MIN_LENGTHSCALE, initial_value=prior.mode),
        )
        self.to(inducing_points.dtype)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """The GP prior at inputs `(n, k)`."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def sparse_likelihood(dtype: torch.dtype = torch.float64) -> gpytorch.likelihoods.GaussianLikelihood:
    """Gaussian likelihood with botorch's LogNormal(-4, 1) noise prior and a softplus-transformed bound."""
    prior = LogNormalPrior(loc=-4.0, scale=1.0)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_prior=prior, noise_constraint=GreaterThan(_MIN_NOISE, initial_value=prior.mode)
    )
    return likelihood.to(dtype)


def _sparse_state(
    model: SparseGPModel, likelihood: gpytorch.likelihoods.GaussianLikelihood
) -> dict[str, torch.Tensor]:
    """One state dict for the sparse GP and its likelihood (the likelihood's names under ``likelihood.``)."""
    return {**model.state_dict(), **{f"likelihood.{k}": v for k, v in likelihood.state_dict().items()}}


def _load_sparse_state(
    model: SparseGPModel, likelihood: gpytorch.likelihoods.GaussianLikelihood, state: Mapping[str, torch.Tensor]
) -> None:
    prefix = "likelihood."
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
    likelihood.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def set_optimal_variational(
    model: SparseGPModel,
    likelihood: gpytorch.likelihoods.GaussianLikelihood,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    chunk: int = 1024,
) -> None:
    """Set `q(v)` to its ELBO optimum given the kernel, mean, noise and inducing inputs (Titsias, 2009).

    In the whitened parametrization `u = L v` with `L Lᵀ = K_uu + jitter·I` and
    `A = L⁻¹ K_uf`: `S = (I + A Aᵀ / σ²)⁻¹` and `m = S A (y − c) / σ²`. `O(N·m²)` time,
    `O(chunk·m + m²)` memory. Leaves the model in eval mode, ready to predict.

    Args:
        model: The sparse GP (its variational parameters are overwritten).
        likelihood: Its Gaussian likelihood (noise `σ²`).
        train_x: Inputs `(N, k)`.
        train_y: Standardized targets `(N,)`.
        chunk: Rows of `K_uf` formed at a time.
    """
    strategy = model.variational_strategy
    with torch.no_grad():
        z = strategy.inducing_points
        m = z.shape[0]
        eye = torch.eye(m, dtype=z.dtype, device=z.device)
        k_uu = model.covar_module(z).to_dense() + strategy.jitter_val * eye
        chol = psd_safe_cholesky(k_uu)
        noise = likelihood.noise.reshape(())
        residual = train_y - model.mean_module.constant.reshape(())
        gram = torch.zeros(m, m, dtype=z.dtype, device=z.device)
        proj = torch.zeros(m, dtype=z.dtype, device=z.device)
        for start in range(0, train_x.shape[0], chunk):
            k_uf = model.covar_module(z, train_x[start : start + chunk]).to_dense()
            a = torch.linalg.solve_triangular(chol, k_uf, upper=False)
            gram += a @ a.T
            proj += a @ residual[start : start + chunk]
        covar = torch.cholesky_inverse(psd_safe_cholesky(eye + gram / noise))
        covar = 0.5 * (covar + covar.T)
        distribution = strategy._variational_distribution
        distribution.variational_mean.copy_(covar @ proj / noise)
        distribution.chol_variational_covar.copy_(psd_safe_cholesky(covar))
        strategy.variational_params_initialized.fill_(1)
    _prime_caches(model)


def _clear_caches(model: torch.nn.Module) -> None:
    """Drop gpytorch's memoized prediction caches (switching to train mode and back clears them)."""
    model.train()
    model.eval()


def _prime_caches(model: SparseGPModel) -> None:
    """Rebuild the sparse GP's eval-mode caches from its current parameters, without autograd history.

    In eval mode ``VariationalStrategy`` caches the Cholesky factor of `K_uu` (and `q(u)`), taken
    from the joint kernel matrix of the inducing points and the first query; built with gradients
    on, it would hold that query's autograd graph (and a second backward through it fails). Built
    here under ``no_grad`` from the same input every time, so a fitted and a loaded model cache
    identical values.
    """
    _clear_caches(model)
    with torch.no_grad():
        model(model.variational_strategy.inducing_points[:1])


class GPSurrogate(Surrogate):
    """GP surrogate with optional PCA input reduction: exact GP when small, sparse variational GP beyond.

    Args:
        input_dim: Feature dimension `D`.
        pca_dim: Reduce to this many principal components when ``input_dim > pca_dim``
            (``None``: never reduce).
        max_points: The most points the exact GP is fitted on: with ``method="auto"`` the
            size up to which the exact GP is used (the sparse GP on every point beyond it);
            with ``method="exact"`` a cap (a random subset of this many is fitted when given
            more, with a warning); with ``objective="mll_subset"`` also the size of the
            subset the sparse GP's hyperparameters are fitted on.
        max_iter: Cap on L-BFGS-B iterations of each exact marginal-likelihood fit.
        dtype: Output dtype (``"float32"`` or ``"float64"``); the GP itself runs in float64.
        method: ``"auto"``, ``"exact"`` or ``"sparse"`` (see the module docstring).
        inducing_points: Number `m` of inducing points of the sparse GP (fewer when fitted on
            fewer points), initialized at a random subset of the training inputs.
        epochs: Passes over the data of the sparse GP's mini-batch optimization (0: none; the
            closed-form `q(u)` is still set unless ``objective="pll"``).
        batch_size: Points per mini-batch of the sparse GP (above ``inducing_points``,
            gpytorch takes a faster path for the predictive updates).
        lr: Adam learning rate of the sparse GP.
        objective: What trains the sparse GP's kernel, noise and mean: ``"mll_subset"``,
            ``"elbo"`` or ``"pll"`` (see the module docstring).
        label_noise_std: The label-noise std in reward units when it is known (the online loop
            passes the noise it adds); subtracted from the leave-one-out error variance before
            the epistemic variance is scaled to it. ``None``: unknown, all of that error counts
            as the model's (conservative).
    """

    kind = "gp"
    #: ``"joint"``: :meth:`joint_posterior`, the posterior covariance between points (batch-aware batch selection).
    capabilities = frozenset({"joint"})
    hyperparameter_specs = {
        **Surrogate.hyperparameter_specs,
        "pca_dim": integer(1, 4096, optional=True),
        "max_points": integer(1, 8192),  # the exact GP's size (method "auto": the exact/sparse switch)
        "max_iter": integer(1, 100_000),
        "method": choice(GP_METHODS),
        "inducing_points": integer(1, 4096),
        "epochs": integer(0, 100_000),
        "batch_size": integer(1, 2**16),
        "lr": number(0.0, low_open=True),
        "objective": choice(GP_OBJECTIVES),
        "label_noise_std": number(0.0, optional=True),
    }
    legacy_hyperparameters = ("beta",)
    _standardizers = ("y_norm",)
    _movable = ("pca_components", "pca_mean", "lower", "span", "variance_scale", "model", "likelihood")

    @records_hyperparameters
    def __init__(
        self,
        input_dim: int,
        pca_dim: int | None = 32,
        max_points: int = 512,
        max_iter: int = 100,
        dtype: str | torch.dtype = "float32",
        method: str = "auto",
        inducing_points: int = 512,
        epochs: int = 20,
        batch_size: int = 1024,
        lr: float = 0.02,
        objective: str = "mll_subset",
        label_noise_std: float | None = None,
    ) -> None:
        super().__init__(input_dim, dtype)
        if method not in GP_METHODS:
            raise ValueError(f"Unknown GP method {method!r}; valid: {list(GP_METHODS)}.")
        if objective not in GP_OBJECTIVES:
            raise ValueError(f"Unknown sparse GP objective {objective!r}; valid: {list(GP_OBJECTIVES)}.")
        self.label_noise_std = None if label_noise_std is None else float(label_noise_std)
        self.max_iter = int(max_iter)
        self.pca_dim = pca_dim
        self.max_points = int(max_points)
        self.method = str(method)
        self.inducing_points = int(inducing_points)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.objective = str(objective)
        self.pca_components: torch.Tensor | None = None  # (k, D) or None
        self.pca_mean: torch.Tensor | None = None  # (D,)
        self.lower = torch.zeros(0, dtype=torch.float64)
        self.span = torch.ones(0, dtype=torch.float64)
        self.y_norm = Standardizer(1, torch.float64)
        self.variance_scale = torch.ones((), dtype=torch.float64)  # calibrated factor on the epistemic variance
        self.model: SingleTaskGP | SparseGPModel | None = None
        self.likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None  # the model's noise
        self._template_state: dict[str, torch.Tensor] = {}  # a fresh GP's state, while a checkpoint loads
        self._template_fixed: dict[str, torch.Tensor] = {}  # its buffers' only valid values

    @classmethod
    def implied_elements(cls, values: Mapping[str, Any]) -> tuple[str, int, str]:
        """The `k x D` PCA components plus the larger of what the methods allocate.

        The exact GP's `N x N` kernel matrix and `N x k` inputs for `N = max_points` (methods
        ``"auto"`` and ``"exact"``, and the sparse GP's hyperparameter fit with
        ``objective="mll_subset"``); the sparse GP's three `m x m` matrices (`q(u)` factor, `K_uu`
        and its factor), `m x k` inducing inputs and `batch_size x m` cross-covariance for
        `m = inducing_points` (``"auto"`` and ``"sparse"``).
        """
        input_dim, pca_dim, method = int(values["input_dim"]), values["pca_dim"], values["method"]
        points, k = int(values["max_points"]), input_dim if pca_dim is None else min(int(pca_dim), input_dim)
        exact = points * points + points * k
        inducing, batch = int(values["inducing_points"]), int(values["batch_size"])
        sparse = 3 * inducing * inducing + inducing * k + batch * inducing
        exact_used = method != "sparse" or values["objective"] == "mll_subset"  # the subset fit is exact
        exact, sparse = (exact if exact_used else 0), (sparse if method != "exact" else 0)
        field, count = ("max_points", exact) if exact >= sparse else ("inducing_points", sparse)  # one at a time
        return field, count + k * input_dim, f"input_dim={input_dim}, pca_dim={pca_dim} and method={method!r}"

    @classmethod
    def legacy_acquisition(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Before 0.2 the optimistic score was mean + `β`·std with the model's ``beta`` (default 2), unclipped."""
        return {"kind": "ucb", "beta": hyperparameters.get("beta", 2.0), "clip": None}

    @property
    def sparse(self) -> bool:
        """Whether the fitted (or loaded) GP is the sparse one."""
        return isinstance(self.model, SparseGPModel)

    def uses_sparse(self, n: int) -> bool:
        """Whether a fit on `n` points uses the sparse GP under this ``method`` and ``max_points``."""
        return self.method == "sparse" or (self.method == "auto" and n > self.max_points)

    # ------------------------------------------------------------------ inputs
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Map features `(N, D)` to the GP's inputs `(N, k)` (PCA, then unit-cube scaling); differentiable."""
        z = features.to(torch.float64)
        if self.pca_components is not None:
            z = (z - self.pca_mean) @ self.pca_components.T
        return (z - self.lower) / self.span

    def _fit_projection(self, x: torch.Tensor, generator: torch.Generator) -> None:
        if self.pca_dim is not None and self.input_dim > self.pca_dim:
            k = min(int(self.pca_dim), x.shape[0], self.input_dim)
            pca = PCA(n_components=k, svd_solver="covariance_eigh")
            pca.fit(x.detach().cpu().numpy())
            # sklearn may return column-major components; a checkpoint stores them row-major, and the
            # projection's matmul rounds differently for the two layouts, so keep them row-major here too.
            self.pca_components = torch.from_numpy(pca.components_).to(torch.float64).contiguous().to(x.device)
            self.pca_mean = torch.from_numpy(pca.mean_).to(torch.float64).contiguous().to(x.device)
        else:
            self.pca_components = self.pca_mean = None
        self.lower = torch.zeros(1, dtype=torch.float64, device=x.device)
        self.span = torch.ones(1, dtype=torch.float64, device=x.device)
        z = self.project(x)
        self.lower = z.min(0).values
        self.span = (z.max(0).values - self.lower).clamp_min(1e-9)

    def _build_model(self, train_x: torch.Tensor, train_y: torch.Tensor) -> SingleTaskGP:
        return SingleTaskGP(train_x, train_y.unsqueeze(-1), outcome_transform=None)

    # --------------------------------------------------------------------- fit
    def _fit(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, warm: bool) -> dict[str, Any]:
        """Fit PCA, scaling and the GP (exact or sparse, see ``method``) on every point.

        Deterministic given the generator (bit for bit on the same machine and thread count),
        which draws the subset choice when ``method="exact"`` and the optimizer restarts (exact),
        or the inducing-point initialization and the mini-batch order (sparse). A warm start
        keeps the current projection and starts from the current hyperparameters (and, sparse to
        sparse, inducing points and `q(u)`).

        Returns:
            ``fit_info``: ``n_fit`` (points the GP was fitted on), ``subsampled``, ``method``
            (``"exact"`` or ``"sparse"``), ``gp_input_dim``, ``lengthscale``, ``noise``,
            ``seconds``, ``calibration`` (see :meth:`_calibrate`) and, sparse,
            ``inducing_points``, ``epochs``, ``steps``, ``objective`` and ``final_loss``
            (:meth:`Surrogate.fit` adds ``warm_start``).
        """
        start = time.perf_counter()
        n = x.shape[0]
        sparse = self.uses_sparse(n)
        x64, y64 = self._exact_subset(x.to(torch.float64), y.to(torch.float64), generator, sparse)
        if not warm:
            self._fit_projection(x64, generator)
        self.y_norm = Standardizer(1, torch.float64).fit(y64, correction=1)  # botorch's convention
        train_x = self.project(x64).detach()
        train_y = self.y_norm.transform(y64.unsqueeze(-1)).squeeze(-1)
        if sparse:
            extra = self._fit_sparse(train_x, train_y, generator, warm)
        else:
            extra = self._fit_exact(train_x, train_y, generator, warm)
        calibration = self._calibrate(train_x, train_y)
        assert self.likelihood is not None and self.model is not None
        return {
            "n_fit": int(train_x.shape[0]),
            "subsampled": bool(train_x.shape[0] < n),
            "method": "sparse" if sparse else "exact",
            "gp_input_dim": int(train_x.shape[1]),
            "lengthscale": self.model.covar_module.lengthscale.detach().reshape(-1).tolist(),
            "noise": float(self.likelihood.noise.detach().reshape(-1)[0]),
            **extra,
            "calibration": calibration,
            "seconds": time.perf_counter() - start,
        }

    def _exact_subset(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, sparse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points to fit: all, or a random ``max_points`` of them for an exact GP given more (with a warning)."""
        n = x.shape[0]
        if sparse or n <= self.max_points:
            return x, y
        warnings.warn(
            f"GPSurrogate fits an exact GP on a random subset of {self.max_points} of the {n} points "
            f"(method='exact', max_points={self.max_points}); use method='auto' or 'sparse' to fit a sparse GP "
            f"on every point, or raise max_points to use more at O(N^3) cost.",
            UserWarning,
            stacklevel=4,
        )
        keep = torch.randperm(n, generator=generator)[: self.max_points].to(x.device)
        return x[keep], y[keep]

    def _previous_hyperparameters(self) -> dict[str, torch.Tensor] | None:
        """Lengthscale `(1, k)`, noise `(1,)` and constant `()` of the current GP, for a warm start across methods."""
        if self.model is None or self.likelihood is None:
            return None
        return {
            "lengthscale": self.model.covar_module.lengthscale.detach().clone(),
            "noise": self.likelihood.noise.detach().clone().reshape(-1),
            "constant": self.model.mean_module.constant.detach().clone().reshape(()),
        }

    @staticmethod
    def _set_hyperparameters(model, likelihood, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            model.covar_module.lengthscale = values["lengthscale"].clamp_min(_MIN_LENGTHSCALE)
            likelihood.noise = values["noise"].clamp_min(_MIN_NOISE)
            model.mean_module.constant = values["constant"]

    def _fit_exact(self, train_x: torch.Tensor, train_y: torch.Tensor, g: torch.Generator, warm: bool) -> dict:
        previous = self._previous_hyperparameters() if warm else None
        old_state = self.model.state_dict() if warm and not self.sparse else None
        self.model = self._build_model(train_x, train_y)
        self.likelihood = self.model.likelihood
        if old_state is not None:
            self.model.load_state_dict(old_state)
        elif previous is not None:  # a warm start from the sparse GP: its hyperparameters
            self._set_hyperparameters(self.model, self.likelihood, previous)
        fitted = self._maximize_marginal_likelihood(self.model, g)
        self.model.eval()
        return {} if fitted else {"hyperparameters": "kept (every marginal-likelihood fit attempt failed)"}

    def _loo(self, train_x: torch.Tensor, train_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Leave-one-out residuals and epistemic variances `(n,)` of the fitted GP's training points (closed form).

        Standardized units; see the module docstring for the formulas. ``None`` for the PLL-trained
        sparse GP (its `q(u)` is not the closed form they assume).

        Args:
            train_x: Projected inputs `(N, k)` the GP was fitted on.
            train_y: Their standardized targets `(N,)`.
        """
        assert self.model is not None and self.likelihood is not None
        model = self.model
        noise = self.likelihood.noise.detach().reshape(-1)[0]
        with torch.no_grad():
            residual = train_y - model.mean_module.constant.reshape(())
            if not self.sparse:
                x, y = model.train_inputs[0], model.train_targets - model.mean_module.constant.reshape(())
                n = x.shape[0]
                k_y = model.covar_module(x).to_dense() + noise * torch.eye(n, dtype=x.dtype, device=x.device)
                inverse = torch.cholesky_inverse(psd_safe_cholesky(k_y))
                diag = torch.diagonal(inverse).clamp_min(1e-12)
                return (inverse @ y) / diag, (1.0 / diag - noise).clamp_min(0.0)
            if self.objective == "pll":
                return None
            strategy = model.variational_strategy
            z = strategy.inducing_points
            eye = torch.eye(z.shape[0], dtype=z.dtype, device=z.device)
            chol = psd_safe_cholesky(model.covar_module(z).to_dense() + strategy.jitter_val * eye)
            distribution = strategy._variational_distribution
            mean_v = distribution.variational_mean
            chol_s = distribution.chol_variational_covar
            residuals, variances = [], []
            for start in range(0, train_x.shape[0], self.batch_size):
                a = torch.linalg.solve_triangular(
                    chol, model.covar_module(z, train_x[start : start + self.batch_size]).to_dense(), upper=False
                )  # (m, b)
                q = (chol_s.T @ a).square().sum(0)  # a_iᵀ S a_i
                leverage = (q / noise).clamp(0.0, 1.0 - 1e-9)
                prior_left = (1.0 - a.square().sum(0)).clamp_min(0.0)  # k(x, x) = 1: an RBF kernel without scale
                residuals.append((residual[start : start + self.batch_size] - a.T @ mean_v) / (1.0 - leverage))
                variances.append(prior_left + q / (1.0 - leverage))
            return torch.cat(residuals), torch.cat(variances)

    def _calibrate(self, train_x: torch.Tensor, train_y: torch.Tensor) -> dict[str, Any]:
        """Set ``variance_scale`` from the leave-one-out errors (see the module docstring).

        Args:
            train_x: Projected inputs `(N, k)` of the fit.
            train_y: Their standardized targets `(N,)`.

        Returns:
            The record kept in ``fit_info["calibration"]``: :func:`heldout_variance_split`'s
            fields, ``mean_loo_var`` (mean leave-one-out epistemic variance before scaling),
            ``scale`` `s` and ``calibrated``.
        """
        self.variance_scale = torch.ones((), dtype=torch.float64, device=train_x.device)
        loo = self._loo(train_x, train_y)
        if loo is None:
            return {"scale": 1.0, "calibrated": False}
        residuals, variances = loo
        y_scale = float(self.y_norm.std[0])
        noise_var = None if self.label_noise_std is None else (self.label_noise_std / y_scale) ** 2
        split = heldout_variance_split(residuals, prior_var=float(train_y.var(correction=0)), noise_var=noise_var)
        mean_var = float(variances.mean())
        scale = split["epistemic_var"] / mean_var if mean_var > 0 else 1.0
        if not (math.isfinite(scale) and scale > 0):
            return {**split, "mean_loo_var": mean_var, "scale": 1.0, "calibrated": False}
        self.variance_scale = torch.tensor(scale, dtype=torch.float64, device=train_x.device)
        return {**split, "mean_loo_var": mean_var, "scale": scale, "calibrated": True}

    def _maximize_marginal_likelihood(self, model: SingleTaskGP, g: torch.Generator) -> bool:
        """L-BFGS-B on the exact marginal likelihood (Cholesky at every size, ``max_iter`` iterations at most).

        Returns False when every attempt failed (botorch then restores the hyperparameters the
        fit started from, which are kept: a tiny or degenerate dataset must not end a run).
        """
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with torch.random.fork_rng(devices=[]), gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS):
            torch.manual_seed(draw_seed(g))
            try:
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": self.max_iter}})
            except ModelFittingError:
                return False
        return True

    def _subset_hyperparameters(
        self, train_x: torch.Tensor, train_y: torch.Tensor, g: torch.Generator, previous: dict | None
    ) -> dict[str, torch.Tensor]:
        """Kernel, noise and mean of an exact GP fitted on a random subset of ``max_points`` of the points.

        Args:
            train_x: Projected inputs `(N, k)`.
            train_y: Standardized targets `(N,)`.
            g: The fit generator (draws the subset and the optimizer's seed).
            previous: Hyperparameters to start from (a warm start), or None.

        Returns:
            ``lengthscale`` `(1, k)`, ``noise`` `(1,)` and ``constant`` `()`.
        """
        n = train_x.shape[0]
        subset = torch.randperm(n, generator=g)[: min(n, self.max_points)].to(train_x.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # botorch's input-scaling warnings: the subset is not the unit cube
            exact = self._build_model(train_x[subset], train_y[subset])
        if previous is not None:
            self._set_hyperparameters(exact, exact.likelihood, previous)
        self._maximize_marginal_likelihood(exact, g)
        return {
            "lengthscale": exact.covar_module.lengthscale.detach().clone(),
            "noise": exact.likelihood.noise.detach().clone().reshape(-1),
            "constant": exact.mean_module.constant.detach().clone().reshape(()),
        }

    def _fit_sparse(self, train_x: torch.Tensor, train_y: torch.Tensor, g: torch.Generator, warm: bool) -> dict:
        n, k = train_x.shape
        previous = self._previous_hyperparameters() if warm else None
        # a warm start keeps the inducing points and q(u) unless their number or dimension would change
        m = min(self.inducing_points, n)
        keep_model = warm and self.sparse and self.model.variational_strategy.inducing_points.shape == (m, k)
        if keep_model:
            model, likelihood = self.model, self.likelihood
        else:
            chosen = torch.randperm(n, generator=g)[:m].to(train_x.device)
            model = SparseGPModel(train_x[chosen].clone()).to(train_x.device)
            likelihood = sparse_likelihood(train_x.dtype).to(train_x.device)
            if previous is not None:
                self._set_hyperparameters(model, likelihood, previous)
        if self.objective == "mll_subset":  # the kernel, noise and mean stay fixed below
            self._set_hyperparameters(model, likelihood, self._subset_hyperparameters(train_x, train_y, g, previous))
            trained = list(model.variational_strategy.parameters())  # inducing inputs and q(u)
        else:
            trained = [*model.parameters(), *likelihood.parameters()]
        set_optimal_variational(model, likelihood, train_x, train_y, self.batch_size)  # a good start for q(u)
        objective_cls = PredictiveLogLikelihood if self.objective == "pll" else VariationalELBO
        objective = objective_cls(likelihood, model, num_data=n)
        for p in trained:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(trained, lr=self.lr)
        model.train()
        likelihood.train()
        steps, loss = 0, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw_seed(g))  # nothing here should draw from it; pinned all the same
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=g).to(train_x.device)
                for batch in order.split(self.batch_size):
                    optimizer.zero_grad(set_to_none=True)
                    loss = -objective(model(train_x[batch]), train_y[batch])
                    loss.backward()
                    optimizer.step()
                    steps += 1
        for p in [*model.parameters(), *likelihood.parameters()]:
            p.requires_grad_(False)  # predictions track gradients to the features only
        if self.objective != "pll":
            set_optimal_variational(model, likelihood, train_x, train_y, self.batch_size)
        likelihood.eval()
        _prime_caches(model)
        self.model, self.likelihood = model, likelihood
        return {
            "inducing_points": int(model.variational_strategy.inducing_points.shape[0]),
            "epochs": self.epochs,
            "steps": steps,
            "objective": self.objective,
            "final_loss": None if loss is None else float(loss.detach()),  # the last mini-batch's
        }

    # --------------------------------------------------------------- predict
    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> Posterior:
        self._check_fitted()
        assert self.model is not None and self.likelihood is not None
        x, lead = as_feature_matrix(features, self.input_dim)
        z = self.project(x)
        self.model.eval()
        with gpytorch.settings.fast_pred_var(False), gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS):
            mvn = self.model(z)
            mean, var = mvn.mean, mvn.variance * self.variance_scale
        if observation_noise:
            var = var + self.likelihood.noise.reshape(-1)[0]
        std = var.clamp_min(1e-30).sqrt() * self.y_norm.std[0]
        mean = self.y_norm.inverse(mean.unsqueeze(-1)).squeeze(-1)
        return Posterior(mean.to(self.dtype).reshape(lead), std.to(self.dtype).reshape(lead))

    def joint_posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint posterior of the latent function at `M` points: mean `(..., M)`, covariance `(..., M, M)`.

        The same model as :meth:`posterior` (PCA, scaling, standardisation, the calibrated
        variance scale `s`), in reward units and this surrogate's dtype: its diagonal is
        :meth:`posterior`'s std² (epistemic, without observation noise). Exact GP: the GP's
        posterior covariance; sparse GP: `q(f)`'s. Leading dimensions of `features` are
        independent sets of points (each gets its own `M x M` covariance). Not differentiable:
        it is meant for batch selection (:mod:`surrogate.batch_selection`).

        Args:
            features: `(..., M, D)` with `M >= 1`.
        """
        self._check_fitted()
        assert self.model is not None
        if features.dim() < 2 or features.shape[-1] != self.input_dim:
            raise ValueError(f"Expected features (..., M, {self.input_dim}), got shape {tuple(features.shape)}.")
        self.model.eval()
        with (
            torch.no_grad(),
            gpytorch.settings.fast_pred_var(False),
            gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS),
        ):
            mvn = self.model(self.project(features))
            scale = self.y_norm.std[0]
            covariance = mvn.covariance_matrix * (self.variance_scale * scale**2)
            mean = self.y_norm.inverse(mvn.mean.unsqueeze(-1)).squeeze(-1)
        return mean.to(self.dtype), covariance.to(self.dtype)

    # ------------------------------------------------------------ checkpoint
    def _move(self, device: torch.device) -> None:
        super()._move(device)
        if self.model is not None and self.sparse:
            _prime_caches(self.model)  # cached factors stay where they were computed

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model is not None and self.likelihood is not None
        if self.sparse:
            tensors = {f"gp.{k}": v for k, v in _sparse_state(self.model, self.likelihood).items()}
        else:
            tensors = {f"gp.{k}": v for k, v in self.model.state_dict().items()}
            tensors["train_x"] = self.model.train_inputs[0]
            tensors["train_y"] = self.model.train_targets
        tensors["lower"] = self.lower
        tensors["span"] = self.span
        tensors["variance_scale"] = self.variance_scale
        if self.pca_components is not None:
            tensors["pca.components"] = self.pca_components
            tensors["pca.mean"] = self.pca_mean
        return tensors

    def _checkpoint_is_sparse(self, header: dict[str, Any]) -> bool:
        """Which GP a checkpoint holds, from its header alone.

        Checkpoints written before the sparse GP existed have no ``method`` hyperparameter;
        they hold an exact GP (on a subset when `n_data > max_points`).
        """
        if "method" not in header["hyperparameters"]:
            return False
        return self.uses_sparse(int(header["n_data"]))

    def _expected_model_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        """The GP's tensors: the projection, and the exact GP's training data or the sparse GP's `q(u)`.

        `k` is the GP's input dimension (:meth:`_checkpoint_input_dim`). Exact: `n = min(n_data,
        max_points)` training points ``train_x`` `(n, k)` and ``train_y`` `(n,)`, and the ``gp.*``
        names and shapes of a fresh ``SingleTaskGP`` on `k`-dimensional inputs. Sparse: `m`
        inducing points, read from ``gp.variational_strategy.inducing_points`` and within `[1,
        min(inducing_points, n_data)]`, and the ``gp.*`` names and shapes of a fresh
        :class:`SparseGPModel` with `m` inducing points in `k` dimensions plus its likelihood's
        (``gp.likelihood.*``). Both: the scalar ``variance_scale``, unless the hyperparameters
        predate it (no ``label_noise_std``).
        """
        n_data, dim = int(header["n_data"]), self.input_dim
        if n_data < 1:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} header field 'n_data' is 0, but a fitted GP holds data; re-save it."
            )
        found = table.get("train_x")
        if found is not None and len(found.shape) == 2 and found.shape[0] > self.max_points:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'train_x' holds {found.shape[0]} training points, more than "
                f"its hyperparameters' max_points={self.max_points}; re-fit the surrogate and save it again."
            )
        sparse = self._checkpoint_is_sparse(header)
        k = self._checkpoint_input_dim(table, n_data, sparse)
        expected = {"lower": tensor_info(torch.float64, (k,)), "span": tensor_info(torch.float64, (k,))}
        if "label_noise_std" in header["hyperparameters"]:  # checkpoints from before the calibration lack it
            expected["variance_scale"] = tensor_info(torch.float64, ())
        if self.pca_dim is not None and dim > self.pca_dim:  # the PCA projection
            expected["pca.components"] = tensor_info(torch.float64, (k, dim))
            expected["pca.mean"] = tensor_info(torch.float64, (dim,))
        if sparse:
            self._template_state, buffers = self._sparse_template(table, n_data, k)
        else:
            n = min(n_data, self.max_points)
            expected["train_x"] = tensor_info(torch.float64, (n, k))
            expected["train_y"] = tensor_info(torch.float64, (n,))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # botorch warns about the template's unscaled data
                zeros = torch.zeros(1, k, dtype=torch.float64)
                model = self._build_model(zeros, zeros[:, 0])
            self._template_state, buffers = model.state_dict(), dict(model.named_buffers())
        self._template_fixed = {f"gp.{name}": value.detach().clone() for name, value in buffers.items()}
        expected.update({f"gp.{name}": tensor_info(v.dtype, v.shape) for name, v in self._template_state.items()})
        return expected

    def _checkpoint_input_dim(self, table: Mapping[str, TensorInfo], n_data: int, sparse: bool) -> int:
        """The GP's input dimension `k` in a checkpoint: ``input_dim`` without PCA, else from ``pca.components``.

        With PCA, `k` is read from ``pca.components`` when it lies in `[1, min(pca_dim, input_dim)]`
        (a warm-started fit keeps an earlier, possibly smaller, projection); otherwise it is a
        fresh fit's `k` (the sparse GP's PCA sees every point, the exact GP's at most ``max_points``).
        """
        dim = self.input_dim
        if self.pca_dim is None or dim <= self.pca_dim:
            return dim
        k_max = min(int(self.pca_dim), dim)
        components = table.get("pca.components")
        if components is not None and len(components.shape) == 2 and 1 <= components.shape[0] <= k_max:
            return components.shape[0]
        return min(int(self.pca_dim), n_data if sparse else min(n_data, self.max_points), dim)

    def _sparse_template(
        self, table: Mapping[str, TensorInfo], n_data: int, k: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A fresh sparse GP's state and buffers for a checkpoint's `m` inducing points in `k` dimensions."""
        m = min(self.inducing_points, n_data)
        inducing = table.get("gp.variational_strategy.inducing_points")
        if inducing is not None and len(inducing.shape) == 2 and 1 <= inducing.shape[0] <= m:
            m = inducing.shape[0]
        model = SparseGPModel(torch.zeros(m, k, dtype=torch.float64))
        likelihood = sparse_likelihood(torch.float64)
        buffers = dict(model.named_buffers())
        buffers.update({f"likelihood.{name}": value for name, value in likelihood.named_buffers()})
        buffers["variational_strategy.variational_params_initialized"] = torch.tensor(1)
        return _sparse_state(model, likelihood), buffers

    def _fixed_tensors(self) -> dict[str, torch.Tensor]:
        """The GP's buffers, whose only valid values are those of a freshly built (and, sparse, fitted) GP.

        Priors' parameters, constraint bounds (some infinite) and, sparse, the strategy's flags
        (``variational_params_initialized`` is 1 after a fit, ``updated_strategy`` is True); only
        the parameters come from the data.
        """
        return dict(self._template_fixed)

    def _check_loaded(self, path: str) -> None:
        assert self.model is not None and self.likelihood is not None
        self._template_state, self._template_fixed = {}, {}
        self._require_positive(path, "span", self.span)
        self._require_positive(path, "variance_scale", self.variance_scale)
        noise = self.likelihood.noise.detach()
        if not bool((noise > 0).all() and torch.isfinite(noise).all()):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} gives the GP a non-positive noise variance; re-fit the surrogate and "
                f"save it again."
            )
        lengthscale = self.model.covar_module.lengthscale.detach()
        if not bool((lengthscale > 0).all() and torch.isfinite(lengthscale).all()):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} gives the GP a non-positive or infinite lengthscale; re-fit the "
                f"surrogate and save it again."
            )
        if self.sparse:  # the inducing points must give a usable factor and finite predictions
            inducing = self.model.variational_strategy.inducing_points.detach()
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # gpytorch's jitter warnings
                    _prime_caches(self.model)
                    mvn = self.model(inducing)
                    usable = bool(torch.isfinite(mvn.mean).all() and torch.isfinite(mvn.variance).all())
            except (RuntimeError, ValueError):  # e.g. linear_operator's NotPSDError
                usable = False
            if not usable:
                raise SurrogateCheckpointError(
                    f"Surrogate checkpoint {path!r} gives the sparse GP inducing points or a variational "
                    f"distribution without finite predictions; re-fit the surrogate and save it again."
                )

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.pca_components = tensors.get("pca.components")
        self.pca_mean = tensors.get("pca.mean")
        self.lower, self.span = tensors["lower"], tensors["span"]
        self.variance_scale = tensors.get("variance_scale", torch.ones((), dtype=torch.float64))
        state = {k[3:]: v for k, v in tensors.items() if k.startswith("gp.")}
        if self._checkpoint_is_sparse(header):
            inducing = state["variational_strategy.inducing_points"]
            self.model = SparseGPModel(torch.zeros_like(inducing))
            self.likelihood = sparse_likelihood(inducing.dtype)
            _load_sparse_state(self.model, self.likelihood, state)
            for p in [*self.model.parameters(), *self.likelihood.parameters()]:
                p.requires_grad_(False)
            self.likelihood.eval()
            self.model.eval()  # its caches are built by _check_loaded
        else:
            self.model = self._build_model(tensors["train_x"], tensors["train_y"])
            self.model.load_state_dict(state)
            self.likelihood = self.model.likelihood
            self.model.eval()
