"""Gaussian-process surrogate: botorch ``SingleTaskGP`` on (optionally PCA-reduced) features.

Pipeline, all as differentiable torch ops at prediction time (float64 inside):

1. optional PCA (scikit-learn, fitted on the data when ``input_dim > pca_dim``); only its
   ``components_`` `(k, D)` and ``mean_`` `(D,)` are kept, as tensors, and stored in the
   checkpoint (the sklearn object is never pickled);
2. min-max scaling of the projected inputs to the unit cube of the training data;
3. rewards standardized by our own statistics (``outcome_transform=None`` in botorch);
4. ``SingleTaskGP`` with botorch's default kernel (in botorch 0.18 an ARD ``RBFKernel``
   with a dimension-scaled log-normal lengthscale prior, no output scale), constant mean
   and Gaussian noise, fitted by ``fit_gpytorch_mll`` (L-BFGS-B on the exact marginal
   likelihood, forced to Cholesky for every size).

``posterior`` is the exact GP posterior (no LOVE / fast variances); ``optimistic`` is
mean + `β`·std.

Data size, measured by ``benchmarks/bench_surrogate.py`` (``benchmarks/results/surrogate.json``;
768-d features reduced to 32 PCA dims, L-BFGS-B capped at ``max_iter=100`` iterations, 1
torch thread) on this repo's 2-core CPU box shared with other jobs: at load average ~3
the exact fit took 9 s at N=256, 12 s at N=512, 30 s at N=1024 and 207 s at N=2048, so
the largest size fitted in under a minute is N=1024 (N=2048 takes over three minutes).
Under heavier load (6-8) the same fits took 19 s, 22 s and 68 s, i.e. only N=512 stayed
under a minute. The default ``max_points=512`` keeps the fit under a minute in both
cases; the cost grows as `O(N³)` per L-BFGS step.

Beyond it, the fallback, stated plainly: when more than ``max_points`` points are given,
the GP is fitted on a uniformly random subset of ``max_points`` of them, drawn with the
``fit`` generator, and a ``UserWarning`` says so; the other points are ignored by the GP.
The header's ``n_data`` still counts all points and ``fit_info["n_fit"]`` the subset.
Raise ``max_points`` to use more data at the cubic cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import gpytorch
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood
from sklearn.decomposition import PCA

from surrogate.base import Standardizer, Surrogate, as_feature_matrix, draw_seed, make_generator
from surrogate.checkpoint import SurrogateCheckpointError, TensorInfo, tensor_info

_CHOLESKY_ALWAYS = 1_000_000


class GPSurrogate(Surrogate):
    """Exact GP surrogate with optional PCA input reduction.

    Args:
        input_dim: Feature dimension `D`.
        pca_dim: Reduce to this many principal components when ``input_dim > pca_dim``
            (``None``: never reduce).
        beta: UCB multiplier: optimistic = mean + `β`·std.
        max_points: Fit on a random subset of this many points when given more (with a
            warning); see the module docstring for measured sizes.
        max_iter: Cap on L-BFGS-B iterations of the marginal-likelihood fit.
        dtype: Output dtype (``"float32"`` or ``"float64"``); the GP itself runs in float64.
    """

    kind = "gp"

    def __init__(
        self,
        input_dim: int,
        pca_dim: int | None = 32,
        beta: float = 2.0,
        max_points: int = 512,
        max_iter: int = 100,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        super().__init__(input_dim, dtype)
        self._hparams.update(
            pca_dim=None if pca_dim is None else int(pca_dim), beta=float(beta), max_points=int(max_points), max_iter=int(max_iter)
        )
        self.max_iter = int(max_iter)
        self.pca_dim = pca_dim
        self.beta = float(beta)
        self.max_points = int(max_points)
        self.pca_components: torch.Tensor | None = None  # (k, D) or None
        self.pca_mean: torch.Tensor | None = None  # (D,)
        self.lower = torch.zeros(0, dtype=torch.float64)
        self.span = torch.ones(0, dtype=torch.float64)
        self.y_norm = Standardizer(1, torch.float64)
        self.model: SingleTaskGP | None = None
        self._template_state: dict[str, torch.Tensor] = {}  # a fresh GP's state, while a checkpoint loads

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
        """Fit PCA, scaling and the GP hyperparameters (exact marginal likelihood).

        Args:
            features: `(N, D)`.
            rewards: `(N,)`.
            generator: CPU generator (subset choice, PCA, optimizer restarts).
            seed: Used when ``generator`` is None.
            round: Outer-loop round stored in the checkpoint header.
            warm_start: Keep the current projection and start from the current
                hyperparameters.
        """
        import time

        start = time.perf_counter()
        g = make_generator(generator, seed)
        x, y = self._prepare_data(features, rewards)
        n = x.shape[0]
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        if n > self.max_points:
            warnings.warn(
                f"GPSurrogate fits an exact GP on a random subset of {self.max_points} of the {n} points "
                f"(max_points={self.max_points}); raise max_points to use more at O(N^3) cost.",
                UserWarning,
                stacklevel=2,
            )
            keep = torch.randperm(n, generator=g)[: self.max_points].to(x.device)
            x64, y64 = x64[keep], y64[keep]
        warm = warm_start and self.fitted and self.model is not None
        old_state = self.model.state_dict() if warm else None
        if not warm:
            self._fit_projection(x64, g)
        self.y_norm = Standardizer(1, torch.float64).fit(y64, correction=1)  # botorch's convention
        train_x = self.project(x64).detach()
        train_y = self.y_norm.transform(y64.unsqueeze(-1)).squeeze(-1)
        self.model = self._build_model(train_x, train_y)
        if old_state is not None:
            self.model.load_state_dict(old_state)
        mll = ExactMarginalLogLikelihood(self.model.likelihood, self.model)
        with torch.random.fork_rng(devices=[]), gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS):
            torch.manual_seed(draw_seed(g))
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": self.max_iter}})
        self.model.eval()
        self.n_data = int(n)
        if round is not None:
            self.round = int(round)
        self.fitted = True
        self.fit_info = {
            "n_fit": int(train_x.shape[0]),
            "subsampled": bool(n > self.max_points),
            "gp_input_dim": int(train_x.shape[1]),
            "lengthscale": self.model.covar_module.lengthscale.detach().reshape(-1).tolist(),
            "noise": float(self.model.likelihood.noise.detach().reshape(-1)[0]),
            "seconds": time.perf_counter() - start,
            "warm_start": warm,
        }
        return self.fit_info

    # --------------------------------------------------------------- predict
    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        assert self.model is not None
        x, lead = as_feature_matrix(features, self.input_dim)
        z = self.project(x)
        self.model.eval()
        with gpytorch.settings.fast_pred_var(False), gpytorch.settings.max_cholesky_size(_CHOLESKY_ALWAYS):
            mvn = self.model(z)
            mean, var = mvn.mean, mvn.variance
        if observation_noise:
            var = var + self.model.likelihood.noise.reshape(-1)[0]
        std = var.clamp_min(1e-30).sqrt() * self.y_norm.std[0]
        mean = self.y_norm.inverse(mean.unsqueeze(-1)).squeeze(-1)
        return mean.to(self.dtype).reshape(lead), std.to(self.dtype).reshape(lead)

    def optimistic(self, features: torch.Tensor) -> torch.Tensor:
        mean, std = self.posterior(features)
        return mean + self.beta * std

    # ------------------------------------------------------------ checkpoint
    def _move(self, device: torch.device) -> None:
        self.device = torch.device(device)
        for name in ("pca_components", "pca_mean", "lower", "span"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self.y_norm.to(device)
        if self.model is not None:
            self.model.to(device)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model is not None
        tensors = {f"gp.{k}": v for k, v in self.model.state_dict().items()}
        tensors["train_x"] = self.model.train_inputs[0]
        tensors["train_y"] = self.model.train_targets
        tensors["lower"] = self.lower
        tensors["span"] = self.span
        if self.pca_components is not None:
            tensors["pca.components"] = self.pca_components
            tensors["pca.mean"] = self.pca_mean
        tensors.update(self.y_norm.state("y_norm"))
        return tensors

    def _expected_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        """The GP's tensors: `n = min(n_data, max_points)` training points in `k` projected dimensions.

        `k` is the input dimension without PCA; with PCA it is read from ``pca.components``
        and must lie in `[1, min(pca_dim, input_dim)]` (a warm-started fit keeps an earlier,
        possibly smaller, projection); the ``gp.*`` names and shapes are those of a fresh
        ``SingleTaskGP`` on `k`-dimensional inputs.
        """
        n_data, dim = int(header["n_data"]), self.input_dim
        if n_data < 1:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} header field 'n_data' is 0, but a fitted GP holds data; re-save it."
            )
        n = min(n_data, self.max_points)
        found = table.get("train_x")
        if found is not None and len(found.shape) == 2 and found.shape[0] > self.max_points:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor 'train_x' holds {found.shape[0]} training points, more than "
                f"its hyperparameters' max_points={self.max_points}; re-fit the surrogate and save it again."
            )
        reduce = self.pca_dim is not None and dim > self.pca_dim
        k = dim
        if reduce:
            k = min(int(self.pca_dim), n, dim)  # what a fresh fit gives; a warm start keeps an earlier projection
            components = table.get("pca.components")
            k_max = min(int(self.pca_dim), dim)
            if components is not None and len(components.shape) == 2 and 1 <= components.shape[0] <= k_max:
                k = components.shape[0]
        expected = {
            "train_x": tensor_info(torch.float64, (n, k)),
            "train_y": tensor_info(torch.float64, (n,)),
            "lower": tensor_info(torch.float64, (k,)),
            "span": tensor_info(torch.float64, (k,)),
        }
        if reduce:
            expected["pca.components"] = tensor_info(torch.float64, (k, dim))
            expected["pca.mean"] = tensor_info(torch.float64, (dim,))
        expected.update(self.y_norm.expected_state("y_norm"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # botorch warns about the template's unscaled data
            zeros = torch.zeros(1, k, dtype=torch.float64)
            self._template_state = self._build_model(zeros, zeros[:, 0]).state_dict()
        expected.update({f"gp.{name}": tensor_info(v.dtype, v.shape) for name, v in self._template_state.items()})
        return expected

    def _fixed_tensors(self) -> dict[str, torch.Tensor]:
        """Constraint bounds with infinite entries (e.g. a positivity constraint's upper bound)."""
        return {
            f"gp.{name}": value
            for name, value in self._template_state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        }

    def _check_loaded(self, path: str) -> None:
        assert self.model is not None
        self._template_state = {}
        self._require_positive(path, "span", self.span)
        self._require_positive(path, "y_norm.std", self.y_norm.std)
        noise = self.model.likelihood.noise.detach()
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

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.pca_components = tensors.get("pca.components")
        self.pca_mean = tensors.get("pca.mean")
        self.lower, self.span = tensors["lower"], tensors["span"]
        self.y_norm.load_state(tensors, "y_norm")
        self.model = self._build_model(tensors["train_x"], tensors["train_y"])
        self.model.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("gp.")})
        self.model.eval()
        self.fit_info = dict(header.get("extra", {}).get("fit_info", {}))

    def _extra_header(self) -> dict[str, Any]:
        return {"fit_info": self.fit_info}
