"""The sparse GP behind the ``"gp"`` kind: every point used, close to the exact GP, calibrated, exact resume.

The problems are small (a few hundred points, 3-d) with ``max_points`` lowered so that
``method="auto"`` picks the sparse GP; the data-size and timing figures are in
``benchmarks/bench_gp.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import surrogate.checkpoint as checkpoint_module
from surrogate import (
    GPSurrogate,
    HyperparameterError,
    SurrogateCheckpointError,
    check_hyperparameters,
    load_surrogate,
)
from surrogate.base import Surrogate
from surrogate.gp import SparseGPModel
from tests.surrogate.surrogate_helpers import (
    assert_identical,
    craft_checkpoint,
    entry_set,
    header_change,
    outputs,
    tensor_added,
    tensor_change,
)

D = 3
NOISE = 0.1
# Sparse above 100 points: 32 inducing points, hyperparameters from a 100-point exact fit.
SMALL = {"max_points": 100, "inducing_points": 32, "epochs": 3, "batch_size": 64, "max_iter": 30}
INDUCING = "gp.variational_strategy.inducing_points"
Q_MEAN = "gp.variational_strategy._variational_distribution.variational_mean"
Q_CHOL = "gp.variational_strategy._variational_distribution.chol_variational_covar"


def smooth(n: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Inputs `(n, 3)` uniform in `[-1, 1]³`, noiseless values `(n,)` and noisy rewards `(n,)` (std 0.1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g, dtype=torch.float64) * 2 - 1
    f = torch.sin(3 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2]
    y = f + NOISE * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(dtype), f.to(dtype), y.to(dtype)


@pytest.fixture(scope="module")
def sparse_checkpoint(tmp_path_factory) -> Path:
    """A sparse GP fitted on 150 points (float32 outputs), saved once."""
    x, _, y = smooth(150, seed=0, dtype=torch.float32)
    model = GPSurrogate(D, **SMALL)
    model.fit(x, y, generator=torch.Generator().manual_seed(1))
    assert model.sparse
    return model.save(tmp_path_factory.mktemp("sparse") / "gp.safetensors")


# ----------------------------------------------------------------------------------- every point
def test_auto_fits_the_sparse_gp_on_every_point_beyond_max_points():
    x, _, y = smooth(150, seed=0)
    model = GPSurrogate(D, **SMALL)
    info = model.fit(x, y, seed=0)
    assert info["method"] == "sparse" and model.sparse
    assert info["n_fit"] == 150 and not info["subsampled"] and model.n_data == 150
    assert info["inducing_points"] == 32 and info["steps"] == 3 * math.ceil(150 / 64)
    tensors = model._state_tensors()
    assert "train_x" not in tensors and tensors[INDUCING].shape == (32, D)  # no training data is stored
    exact = GPSurrogate(D, **{**SMALL, "max_points": 150})
    assert exact.fit(x, y, seed=0)["method"] == "exact" and not exact.sparse


def test_fewer_points_than_inducing_points_uses_them_all():
    x, _, y = smooth(20, seed=3)
    model = GPSurrogate(D, **{**SMALL, "method": "sparse"})
    info = model.fit(x, y, seed=0)
    assert info["n_fit"] == 20 and info["inducing_points"] == 20


# --------------------------------------------------------------------------- against the exact GP
def test_sparse_gp_with_every_point_inducing_reproduces_the_exact_gp():
    """With `m = N` inducing points at the data and the exact GP's hyperparameters, `q(f)` is the exact posterior.

    ``objective="mll_subset"`` with ``max_points = N`` fits the hyperparameters exactly as the
    exact GP does (the subset is every point), the inducing points are every training input
    and ``epochs=0`` leaves `q(u)` at its closed-form optimum. What remains is gpytorch's
    variational jitter (`1e-6`, standardized units) on `K_uu` and on the predictive variance:
    against the smallest posterior variance here (about `7e-4` standardized) it moves the std
    by well under 0.5% and the mean by under `1e-3` (1% of the noise std).
    """
    x, _, y = smooth(120, seed=0)
    q, _, _ = smooth(200, seed=1)
    exact = GPSurrogate(D, method="exact", max_points=120, dtype="float64")
    exact.fit(x, y, seed=0)
    sparse = GPSurrogate(D, method="sparse", max_points=120, inducing_points=120, epochs=0, dtype="float64")
    sparse.fit(x, y, seed=0)
    torch.testing.assert_close(
        torch.tensor(sparse.fit_info["lengthscale"]), torch.tensor(exact.fit_info["lengthscale"]), rtol=1e-6, atol=0
    )
    mean_e, std_e = exact.posterior(q)
    mean_s, std_s = sparse.posterior(q)
    torch.testing.assert_close(mean_s, mean_e, rtol=0, atol=1e-3)
    torch.testing.assert_close(std_s, std_e, rtol=5e-3, atol=0)


def test_trained_sparse_gp_approaches_the_exact_gp():
    """Defaults' shape at small scale: hyperparameters from a 100-point subset, 64 inducing points, 5 epochs.

    Against the exact GP on all 300 points: the means differ by a small fraction of the noise
    std (RMS under 0.25·σ, max under σ = 0.1), the test RMSE is within 25%, and the median std
    ratio within `[0.8, 1.25]` (measured: RMS 0.004, max 0.019, RMSE 0.045 vs 0.044, ratio 1.16).
    """
    x, _, y = smooth(300, seed=0)
    q, fq, _ = smooth(500, seed=100)
    exact = GPSurrogate(D, method="exact", max_points=300, dtype="float64")
    exact.fit(x, y, seed=0)
    sparse = GPSurrogate(D, max_points=100, inducing_points=64, epochs=5, batch_size=128, dtype="float64")
    assert sparse.fit(x, y, seed=0)["method"] == "sparse"
    with torch.no_grad():
        mean_e, std_e = exact.posterior(q)
        mean_s, std_s = sparse.posterior(q)
    gap = mean_s - mean_e
    assert float(gap.pow(2).mean().sqrt()) < 0.25 * NOISE and float(gap.abs().max()) < NOISE
    rmse_e, rmse_s = (float((m - fq).pow(2).mean().sqrt()) for m in (mean_e, mean_s))
    assert rmse_s < 1.25 * rmse_e
    assert 0.8 < float((std_s / std_e).median()) < 1.25


def test_sparse_coverage_of_a_smooth_function_is_near_nominal():
    """The truth lies in mean ± 2·std for 85-99% of 500 held-out points (nominal 95.4%; measured 97.0%).

    The label noise is known, as in the online loop: the leave-one-out calibration then scales
    the epistemic variance by 1.6 (92.2% before it). With the noise unknown, all of the
    leave-one-out error counts as the model's, and here, where the noise dominates it (RMSE
    0.015 against noise std 0.1), the std is far too wide (coverage 1.0). The binomial std of a
    coverage at 500 points is about 1%.
    """
    x, _, y = smooth(400, seed=0, dtype=torch.float32)
    q, fq, _ = smooth(500, seed=100, dtype=torch.float32)
    model = GPSurrogate(D, max_points=100, inducing_points=64, epochs=5, batch_size=128, label_noise_std=NOISE)
    assert model.fit(x, y, seed=0)["method"] == "sparse"
    with torch.no_grad():
        mean, std = model.posterior(q)
    coverage = float(((fq - mean).abs() <= 2 * std).float().mean())
    assert 0.85 <= coverage <= 0.99, coverage


def test_sparse_gradients_match_finite_differences():
    x, _, y = smooth(150, seed=0)
    model = GPSurrogate(D, dtype="float64", **SMALL)
    model.fit(x, y, seed=0)
    q = (torch.rand(4, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: model.posterior(f), (q,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda f: model.posterior(f, observation_noise=True), (q,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------- determinism
def test_sparse_fit_is_deterministic_given_the_generator():
    x, _, y = smooth(150, seed=0, dtype=torch.float32)
    states = []
    for seed in (5, 5, 6):
        model = GPSurrogate(D, **SMALL)
        model.fit(x, y, generator=torch.Generator().manual_seed(seed))
        states.append(model._state_tensors())
    assert states[0].keys() == states[1].keys()
    assert_identical([states[0][k] for k in sorted(states[0])], [states[1][k] for k in sorted(states[1])])
    assert not torch.equal(states[0][INDUCING], states[2][INDUCING])  # another generator, other inducing points


def test_sparse_fit_leaves_the_global_rng_alone():
    x, _, y = smooth(150, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    GPSurrogate(D, **SMALL).fit(x, y, seed=0)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("dim", [D, 8], ids=["raw-inputs", "pca-8-to-2"])
def test_sparse_checkpoint_round_trips_bit_exactly_and_warm_starts_identically(tmp_path, dim):
    lift = torch.randn(D, dim, generator=torch.Generator().manual_seed(9)) if dim != D else torch.eye(D)
    x, _, y = smooth(150, seed=0, dtype=torch.float32)
    model = GPSurrogate(dim, pca_dim=None if dim == D else 2, **SMALL)
    model.fit(x @ lift, y, generator=torch.Generator().manual_seed(1))
    assert (model.pca_components is None) == (dim == D)
    loaded = load_surrogate(model.save(tmp_path / "m.safetensors"), expected_kind="gp", expected_input_dim=dim)
    assert loaded.sparse and loaded.fit_info["method"] == "sparse"
    assert all(t.is_contiguous() for t in model._state_tensors().values())
    g = torch.Generator().manual_seed(4)
    queries = [torch.rand(*shape, generator=g) * 2 - 1 for shape in [(31, dim), (1, dim), (2, 3, dim)]]
    assert_identical(outputs(model, queries), outputs(loaded, queries))

    x_new, _, y_new = smooth(40, seed=5, dtype=torch.float32)
    x_all, y_all = torch.cat([x, x_new]) @ lift, torch.cat([y, y_new])
    for m in (model, loaded):
        info = m.fit(x_all, y_all, warm_start=True, generator=torch.Generator().manual_seed(5))
        assert info["warm_start"] and info["n_fit"] == 190
    a, b = model._state_tensors(), loaded._state_tensors()
    assert a.keys() == b.keys()
    assert_identical([a[k] for k in sorted(a)], [b[k] for k in sorted(b)])
    assert_identical(outputs(model, queries), outputs(loaded, queries))


def test_warm_start_crosses_from_exact_to_sparse_and_back():
    x, _, y = smooth(200, seed=0)
    model = GPSurrogate(D, **SMALL)
    assert model.fit(x[:80], y[:80], seed=0)["method"] == "exact"
    exact_lengthscale = torch.tensor(model.fit_info["lengthscale"])
    info = model.fit(x, y, seed=1, warm_start=True)
    assert info["method"] == "sparse" and info["warm_start"] and info["n_fit"] == 200
    assert model.pca_components is None and torch.isfinite(torch.tensor(info["lengthscale"])).all()
    assert not torch.equal(torch.tensor(info["lengthscale"]), exact_lengthscale)  # refitted on a subset of 100
    info = model.fit(x[:90], y[:90], seed=2, warm_start=True)
    assert info["method"] == "exact" and info["warm_start"] and not model.sparse


PRIOR_SCALE = "gp.covar_module.lengthscale_prior._buffered_scale"
# (id, mutation, stage, message pattern); stage as in test_untrusted_checkpoints.py.
BAD_SPARSE = [
    (
        "bad-method",
        header_change(method="svgp"),
        "header",
        r"hyperparameters\.method must be one of \['auto', 'exact', 'sparse'\]",
    ),
    ("bad-objective", header_change(objective="fitc"), "header", r"hyperparameters\.objective must be one of \["),
    (
        "huge-inducing-points",
        header_change(inducing_points=10**6),
        "header",
        r"hyperparameters\.inducing_points must be an integer in \[1, 4096\], got 1000000\.",
    ),
    (
        "negative-epochs",
        header_change(epochs=-1),
        "header",
        r"hyperparameters\.epochs must be an integer in \[0, 100000\]",
    ),
    (
        "more-inducing-points-than-allowed",
        header_change(inducing_points=16),
        "table",
        r"tensor 'gp\.variational_strategy\.inducing_points' has shape \(32, 3\) but its header implies \S+ \(16, 3\)",
    ),
    (
        "q-covariance-wrong-shape",
        tensor_change(Q_CHOL, lambda t: torch.zeros(31, 31, dtype=torch.float64)),
        "table",
        (
            r"tensor 'gp\.variational_strategy\._variational_distribution\.chol_variational_covar' has shape "
            r"\(31, 31\) but its header implies shape \(32, 32\)"
        ),
    ),
    (
        "missing-q-mean",
        tensor_change(Q_MEAN, lambda t: None),
        "table",
        r"lacks tensor 'gp\.variational_strategy\._var",
    ),
    (
        "training-data-in-a-sparse-checkpoint",
        tensor_added("train_x", torch.zeros(10, D, dtype=torch.float64)),
        "table",
        r"holds an unexpected tensor 'train_x'",
    ),
    (
        "header-says-exact",
        header_change(method="exact"),
        "table",
        r"lacks tensor 'train_x' \(expected F64 of shape \(100, 3\)\)",
    ),
    (
        "nan-q-mean",
        tensor_change(Q_MEAN, entry_set(3, math.nan)),
        "values",
        r"non-finite values in tensor 'gp\.variational_",
    ),
    (
        "inf-inducing-point",
        tensor_change(INDUCING, entry_set((0, 1), math.inf)),
        "values",
        r"non-finite values in tensor 'gp\.",
    ),
    (
        "uninitialized-flag",
        tensor_change("gp.variational_strategy.variational_params_initialized", lambda t: torch.zeros_like(t)),
        "values",
        r"tensor 'gp\.variational_strategy\.variational_params_initialized' differs from the fixed value \[?1\]?",
    ),
    (
        "unwhitened-flag",
        tensor_change("gp.variational_strategy.updated_strategy", lambda t: torch.zeros_like(t)),
        "values",
        r"tensor 'gp\.variational_strategy\.updated_strategy' differs from the fixed value",
    ),
    (
        "changed-prior",
        tensor_change(PRIOR_SCALE, lambda t: t * 0),
        "values",
        r"'gp\.covar_module\.lengthscale_prior\._b",
    ),
    (
        "overflowing-q-mean",
        tensor_change(Q_MEAN, lambda t: torch.full_like(t, 1e308)),
        "values",
        r"gives the sparse GP inducing points or a variational distribution without finite predictions",
    ),
]


@pytest.mark.parametrize(("mutate", "stage", "pattern"), [c[1:] for c in BAD_SPARSE], ids=[c[0] for c in BAD_SPARSE])
def test_bad_sparse_checkpoint_is_refused_at_the_earliest_stage(
    sparse_checkpoint, tmp_path, monkeypatch, mutate, stage, pattern
):
    path = craft_checkpoint(sparse_checkpoint, tmp_path / "bad.safetensors", mutate)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a refused checkpoint got past the {stage!r} stage")

    if stage == "header":  # nothing is constructed
        monkeypatch.setattr(Surrogate, "__init__", forbidden)
        monkeypatch.setattr(SparseGPModel, "__init__", forbidden)
    if stage in ("header", "table"):
        monkeypatch.setattr(checkpoint_module, "safe_open", forbidden)
    with pytest.raises(SurrogateCheckpointError, match=pattern) as caught:
        load_surrogate(path)
    message = str(caught.value)
    assert str(path) in message and message.count(". ") == 0 and message.endswith(".")


def test_checkpoint_from_before_the_sparse_gp_loads_as_the_exact_gp(tmp_path):
    """Headers without ``method`` hold an exact GP, on a subset when `n_data > max_points`."""
    x, _, y = smooth(150, seed=0, dtype=torch.float32)
    model = GPSurrogate(D, **{**SMALL, "method": "exact"})
    with pytest.warns(UserWarning, match="random subset of 100 of the 150"):
        model.fit(x, y, seed=0)

    def legacy(header: dict, tensors: dict) -> None:
        for name in ("method", "inducing_points", "epochs", "batch_size", "lr", "objective"):
            del header["hyperparameters"][name]

    path = craft_checkpoint(model.save(tmp_path / "new.safetensors"), tmp_path / "old.safetensors", legacy)
    loaded = load_surrogate(path)
    assert not loaded.sparse and loaded.method == "auto" and loaded.n_data == 150
    queries = [torch.rand(7, D, generator=torch.Generator().manual_seed(3))]
    assert_identical(outputs(model, queries), outputs(loaded, queries))


# ----------------------------------------------------------------------------- hyperparameters
def test_memory_caps_follow_the_method():
    big_exact = {"input_dim": 768, "pca_dim": None, "max_points": 8192}
    check_hyperparameters("gp", {**big_exact, "method": "sparse", "objective": "elbo"})  # no N x N matrix
    for values in ({**big_exact}, {**big_exact, "method": "sparse"}):  # auto, or the subset's exact fit
        with pytest.raises(HyperparameterError, match=r"^surrogate\.max_points implies [\d,]+ tensor elements"):
            check_hyperparameters("gp", values)
    huge_sparse = {"input_dim": 768, "method": "sparse", "inducing_points": 4096, "batch_size": 65536}
    with pytest.raises(HyperparameterError, match=r"^surrogate\.inducing_points implies [\d,]+ tensor elements"):
        check_hyperparameters("gp", huge_sparse)
    check_hyperparameters("gp", {"input_dim": 768, "method": "sparse", "inducing_points": 4096})
    with pytest.raises(ValueError, match=r"Unknown GP method 'svgp'"):
        GPSurrogate(D, method="svgp")
