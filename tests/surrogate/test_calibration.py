"""Calibration metrics against exact answers; the MLP surrogates' held-out calibration against its closed form;
calibrated UCB and bootstrap intervals covering a smooth function's true values near nominal."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import surrogate.mlp as mlp_module
from surrogate import (
    UCB,
    BootstrapEnsembleSurrogate,
    MLPUCBSurrogate,
    SurrogateCheckpointError,
    calibration_metrics,
    load_surrogate,
    make_surrogate,
    read_header,
)
from surrogate.calibration import (
    PRIOR_WEIGHT,
    average_ranks,
    gaussian_z,
    heldout_variance_split,
    spearman_correlation,
)
from surrogate.checkpoint import save_checkpoint
from tests.surrogate.surrogate_helpers import SMALL_MLP, D, toy_data


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the fits here are tiny, and two threads on a shared 2-core box thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp_models():
    """A small fitted UCB and bootstrap surrogate (80 toy points, 8 of them the validation split)."""
    x, y = toy_data()
    models = {}
    for kind, extra in (("ucb", {}), ("bootstrap", {"num_heads": 3})):
        models[kind] = make_surrogate(kind, input_dim=D, **extra, **SMALL_MLP)
        models[kind].fit(x, y, seed=1)
    return models


class GaussianSurrogate:
    """A fake surrogate with a known posterior: mean `2·x₀`, epistemic std `0.3 + 0.4·|x₁|`, noise std 0.5."""

    device = torch.device("cpu")
    noise = 0.5

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False):
        mean = 2.0 * features[:, 0]
        std = 0.3 + 0.4 * features[:, 1].abs()
        if observation_noise:
            std = (std**2 + self.noise**2).sqrt()
        return mean, std


def _gaussian_data(n: int, seed: int = 0):
    """Features `(n, 2)`, truth drawn from the epistemic posterior, rewards = truth + noise (exactly the model)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    fake = GaussianSurrogate()
    mean, std = fake.posterior(x)
    truth = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    rewards = truth + fake.noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, truth, rewards


def test_z_values_are_the_central_gaussian_quantiles():
    assert gaussian_z(0.5) == pytest.approx(0.6744897502, abs=1e-9)
    assert gaussian_z(0.8) == pytest.approx(1.2815515655, abs=1e-9)
    assert gaussian_z(0.95) == pytest.approx(1.9599639845, abs=1e-9)
    with pytest.raises(ValueError):
        gaussian_z(1.0)


def test_metrics_on_data_drawn_from_the_predicted_gaussian():
    n = 20_000
    x, truth, rewards = _gaussian_data(n)
    fake = GaussianSurrogate()
    out = calibration_metrics(fake, x, rewards, truth=truth)
    assert out["n"] == out["n_truth"] == n and out["n_nonfinite_rewards"] == out["n_nonfinite_predictions"] == 0
    for prefix in ("", "truth_"):
        for level in (50, 80, 95):
            p = level / 100
            # within 4.5 Monte Carlo standard errors of the nominal level
            assert out[f"{prefix}coverage_{level}"] == pytest.approx(p, abs=4.5 * math.sqrt(p * (1 - p) / n))
    mean, std = fake.posterior(x)
    _, pred_std = fake.posterior(x, observation_noise=True)
    # closed forms: width = 2·z·E[std]; E[NLL] = E[½ log(2πσ²)] + ½ (MC error of ½z² averages: 0.71/sqrt(n))
    assert out["width_95"] == pytest.approx(float(2 * gaussian_z(0.95) * pred_std.mean()), rel=1e-12)
    assert out["truth_width_95"] == pytest.approx(float(2 * gaussian_z(0.95) * std.mean()), rel=1e-12)
    expected_nll = float((0.5 * torch.log(2 * math.pi * pred_std**2)).mean()) + 0.5
    assert out["nll"] == pytest.approx(expected_nll, abs=4.5 * math.sqrt(0.5 / n))
    expected_truth_nll = float((0.5 * torch.log(2 * math.pi * std**2)).mean()) + 0.5
    assert out["truth_nll"] == pytest.approx(expected_truth_nll, abs=4.5 * math.sqrt(0.5 / n))
    assert out["rmse"] == pytest.approx(float((pred_std**2).mean().sqrt()), rel=0.03)
    json.dumps(out, allow_nan=False)  # JSON-friendly


def test_nll_with_a_constant_std_is_the_closed_form():
    class Constant:
        def posterior(self, features, *, observation_noise=False):
            return torch.zeros(features.shape[0]), torch.full((features.shape[0],), 0.7)

    n = 20_000
    rewards = 0.7 * torch.randn(n, generator=torch.Generator().manual_seed(3))
    out = calibration_metrics(Constant(), torch.zeros(n, 1), rewards)
    assert out["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * 0.49) + 0.5, abs=4.5 * math.sqrt(0.5 / n))
    assert out["spearman"] is None  # a constant mean has no ranks


def test_spearman_is_one_for_a_monotone_map_and_matches_scipy_with_ties():
    x, _, _ = _gaussian_data(500)
    fake = GaussianSurrogate()
    mean, _ = fake.posterior(x)
    out = calibration_metrics(fake, x, torch.exp(mean / 3.0))  # strictly increasing in the mean
    assert out["spearman"] == 1.0
    assert calibration_metrics(fake, x, -mean)["spearman"] == -1.0
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    stats = pytest.importorskip("scipy.stats")
    g = np.random.default_rng(0)
    a, b = g.integers(0, 5, 200).astype(float), g.integers(0, 7, 200).astype(float)  # many ties
    assert spearman_correlation(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_empty_single_and_non_finite_inputs_give_none_not_errors():
    fake = GaussianSurrogate()
    empty = calibration_metrics(fake, torch.zeros(0, 2), torch.zeros(0), truth=torch.zeros(0))
    assert empty["n"] == 0 and empty["n_truth"] == 0
    assert all(v is None for k, v in empty.items() if not k.startswith("n"))
    one = calibration_metrics(fake, torch.zeros(1, 2), torch.zeros(1))
    assert one["n"] == 1 and one["coverage_50"] == 1.0 and one["spearman"] is None and one["nll"] is not None
    x, truth, rewards = _gaussian_data(50, seed=1)
    rewards[[3, 7]] = torch.tensor([math.nan, math.inf], dtype=torch.float64)
    truth[11] = math.nan
    out = calibration_metrics(fake, x, rewards, truth=truth)
    assert out["n"] == 48 and out["n_nonfinite_rewards"] == 2 and out["n_truth"] == 47
    clean = calibration_metrics(fake, x[rewards.isfinite()], rewards[rewards.isfinite()])
    assert out["coverage_95"] == clean["coverage_95"] and out["nll"] == pytest.approx(clean["nll"])
    all_failed = calibration_metrics(fake, x[:4], torch.full((4,), math.nan))
    assert all_failed["n"] == 0 and all_failed["coverage_95"] is None and all_failed["n_nonfinite_rewards"] == 4
    json.dumps([empty, one, out, all_failed], allow_nan=False)
    with pytest.raises(ValueError, match="rewards"):
        calibration_metrics(fake, x, rewards[:10])


def test_metrics_take_no_gradient_and_work_in_chunks(mlp_models):
    x, y = toy_data(n=37, seed=4)
    model = mlp_models["ucb"]
    whole = calibration_metrics(model, x, y)
    chunked = calibration_metrics(model, x, y, batch_size=5)
    assert whole == pytest.approx(chunked)
    assert torch.is_grad_enabled()  # the no-grad decorator restores the mode


# ------------------------------------------------------------------- the held-out calibration rule
def test_heldout_variance_split_closed_form():
    r = torch.tensor([0.5, -1.0, 2.0])
    split = heldout_variance_split(r, prior_var=1.5, noise_var=None)
    e = (0.25 + 1.0 + 4.0 + PRIOR_WEIGHT * 1.5) / (3 + PRIOR_WEIGHT)
    assert split["error_var"] == pytest.approx(e) and split["epistemic_var"] == pytest.approx(e)
    assert split["heldout_mse"] == pytest.approx(5.25 / 3) and split["n_heldout"] == 3
    known = heldout_variance_split(r, prior_var=1.5, noise_var=0.4)
    assert known["epistemic_var"] == pytest.approx(e - 0.4) and known["noise_var"] == 0.4
    loud = heldout_variance_split(r, prior_var=1.5, noise_var=100.0)  # noise above the error: a small floor remains
    assert loud["epistemic_var"] == pytest.approx(0.01 * e)
    none = heldout_variance_split(r[:0], prior_var=1.5, noise_var=None)
    assert none["error_var"] == pytest.approx(1.5) and none["heldout_mse"] is None


def test_linear_gaussian_model_recovers_the_textbook_width():
    """In a well-specified Bayesian linear model the rule is exact: features `φ (H,)`, weights
    `θ ~ N(0, τ²I)`, answers `φᵀθ + N(0, σ²)`, ridge `λ = σ²/τ²` on 30 training rows. Then a new point's
    truth is `N(φᵀθ̂, σ²·φᵀA⁻¹φ)` and its answer's residual `N(0, σ²(1 + φᵀA⁻¹φ))`, so the scale fitted on
    held-out residuals with the noise known, `s² = (E − σ²) / mean(φᵀA⁻¹φ)`, must be `σ`, and
    `mean ± z·s·sqrt(φᵀA⁻¹φ)` must cover the truth at the nominal rates (400 data sets of 30 rows, each
    with 50 held-out and 50 test points)."""
    g = torch.Generator().manual_seed(0)
    reps, h, n_train, n_out, sigma, tau = 400, 6, 30, 50, 0.5, 1.0
    lam = sigma**2 / tau**2
    theta = tau * torch.randn(reps, h, 1, generator=g, dtype=torch.float64)
    phi = torch.randn(reps, n_train + 2 * n_out, h, generator=g, dtype=torch.float64)
    truth = (phi @ theta).squeeze(-1)
    answers = truth + sigma * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    train = phi[:, :n_train]
    a = train.transpose(1, 2) @ train + lam * torch.eye(h, dtype=torch.float64)
    theta_hat = torch.linalg.solve(a, train.transpose(1, 2) @ answers[:, :n_train, None])
    mean = (phi @ theta_hat).squeeze(-1)
    widths2 = (phi * torch.linalg.solve(a, phi.transpose(1, 2)).transpose(1, 2)).sum(-1)  # φᵀA⁻¹φ, (reps, rows)
    rows_val, rows_test = slice(n_train, n_train + n_out), slice(n_train + n_out, None)
    residuals = (mean - answers)[:, rows_val].reshape(-1)
    split = heldout_variance_split(residuals, prior_var=float(answers.var()), noise_var=sigma**2)
    scale = math.sqrt(split["epistemic_var"] / float(widths2[:, rows_val].mean()))
    assert scale == pytest.approx(sigma, rel=0.1)  # 4 standard errors: E from 20000 residuals fixes s to ~2.4%
    n = reps * n_out
    std = scale * widths2[:, rows_test].sqrt()
    error = (truth - mean)[:, rows_test]
    for level in (0.5, 0.8, 0.95):
        coverage = float((error.abs() <= gaussian_z(level) * std).double().mean())
        # Monte Carlo error of the coverage, plus 0.01 for the error of the fitted scale
        assert coverage == pytest.approx(level, abs=4.5 * math.sqrt(level * (1 - level) / n) + 0.01)


def _capture_split(monkeypatch) -> dict:
    captured = {}
    original = mlp_module.split_indices

    def split(n, fraction, generator):
        captured["train"], captured["val"] = original(n, fraction, generator)
        return captured["train"], captured["val"]

    monkeypatch.setattr(mlp_module, "split_indices", split)
    return captured


@pytest.mark.parametrize("label_noise_std", [None, 0.05])
def test_ucb_scale_matches_the_heldout_error_in_closed_form(monkeypatch, label_noise_std):
    """The mean calibrated predictive variance over the validation rows, each taken as a new point (its
    design-matrix width without its own row, by a dense inverse), equals the shrunk held-out MSE."""
    captured = _capture_split(monkeypatch)
    x, y = toy_data(n=120, dtype=torch.float64)
    model = MLPUCBSurrogate(D, dtype="float64", label_noise_std=label_noise_std, **SMALL_MLP)
    model.fit(x, y, seed=0)
    val = captured["val"]
    phi = model.features(x).detach()
    lam = model.bonus.lam * torch.eye(phi.shape[1], dtype=torch.float64)
    widths2 = []
    for i in val.tolist():
        others = torch.cat([phi[:i], phi[i + 1 :]])
        widths2.append(phi[i] @ torch.linalg.inv(lam + others.T @ others) @ phi[i])
    epistemic = model.bonus.scale**2 * torch.stack(widths2)
    residual2 = (model.mean(x[val]).detach() - y[val]) ** 2
    expected = (residual2.sum() + PRIOR_WEIGHT * y.var(correction=0)) / (len(val) + PRIOR_WEIGHT)
    noise2 = model.noise_std**2
    if label_noise_std is None:
        assert noise2 == pytest.approx(1e-6 * float(expected), rel=1e-6)  # unknown noise: all of it is model error
        assert float(epistemic.mean()) == pytest.approx(float(expected), rel=1e-6)
    else:
        assert model.noise_std == pytest.approx(label_noise_std)
        assert float(epistemic.mean()) + noise2 == pytest.approx(float(expected), rel=1e-6)
    calibration = model.fit_info["calibration"]
    assert calibration["calibrated"] and calibration["n_heldout"] == len(val)
    _, std = model.posterior(x[:5])
    _, pred = model.posterior(x[:5], observation_noise=True)
    torch.testing.assert_close(pred, (std**2 + noise2).sqrt())


def test_ucb_optimism_is_beta_times_the_calibrated_std_clipped():
    x, y = toy_data(n=80)
    model = MLPUCBSurrogate(D, **SMALL_MLP)
    model.fit(x, y, seed=0)
    q = torch.randn(20, D, generator=torch.Generator().manual_seed(1)) * 3
    mean, std = model.posterior(q)
    torch.testing.assert_close(UCB(model, beta=1.5, clip=10.0)(q), mean + (1.5 * std).clamp(max=10.0))
    clip = float((1.5 * std).median().detach())  # now the clip binds for half the points
    torch.testing.assert_close(UCB(model, beta=1.5, clip=clip)(q), mean + (1.5 * std).clamp(max=clip))


def test_normalized_reference_switch_stays_uncalibrated():
    x, y = toy_data(n=80)
    model = MLPUCBSurrogate(D, bonus_covariance="normalized", lam=1e-3, **SMALL_MLP)
    model.fit(x, y, seed=0)
    assert model.bonus.scale == 1.0 and not model.fit_info["calibration"]["calibrated"]
    phi = model.features(x[:4]).detach()
    n = x.shape[0]
    all_phi = model.features(x).detach()
    inv = torch.linalg.inv(all_phi.T @ all_phi / n + 1e-3 * torch.eye(phi.shape[1]))
    torch.testing.assert_close(model.posterior(x[:4])[1], torch.einsum("bi,ij,bj->b", phi, inv, phi).sqrt())


def test_without_a_heldout_split_the_std_is_the_reward_spread():
    """Below 10 points there is no validation split: the calibrated error variance is the reward variance."""
    x, y = toy_data(n=8)
    for kind in ("ucb", "bootstrap"):
        model = make_surrogate(kind, input_dim=D, **SMALL_MLP)
        model.fit(x, y, seed=0)
        calibration = model.fit_info["calibration"]
        assert calibration["n_heldout"] == 0
        assert calibration["error_var"] == pytest.approx(float(model.y_norm.transform(y[:, None]).var(correction=0)))


def test_bootstrap_calibrated_std_closed_form(mlp_models):
    """Over the validation rows the calibrated epistemic variance averages the shrunk held-out MSE, half of it
    shaped by each point's head spread and half constant."""
    model = mlp_models["bootstrap"]
    calibration = model.fit_info["calibration"]
    y_scale = float(model.y_norm.std[0])
    pooled = calibration["mean_spread_var"] * y_scale**2
    assert model.spread_scale**2 * pooled == pytest.approx(0.5 * calibration["epistemic_var"] * y_scale**2, rel=1e-6)
    assert model.floor_std**2 == pytest.approx(0.5 * calibration["epistemic_var"] * y_scale**2, rel=1e-6)
    x, _ = toy_data(n=10, seed=8)
    heads = model.head_predictions(x)
    expected = (model.spread_scale**2 * heads.var(0) + model.floor_std**2).sqrt()
    torch.testing.assert_close(model.posterior(x)[1], expected)
    torch.testing.assert_close(UCB(model, beta=2.0)(x), heads.mean(0) + 2.0 * expected)


def test_fit_is_deterministic_and_the_calibration_round_trips(tmp_path):
    x, y = toy_data(n=60)
    for kind in ("ucb", "bootstrap"):
        a = make_surrogate(kind, input_dim=D, **SMALL_MLP)
        b = make_surrogate(kind, input_dim=D, **SMALL_MLP)
        a.fit(x, y, seed=2)
        b.fit(x, y, generator=torch.Generator().manual_seed(2))
        assert a.fit_info["calibration"] == b.fit_info["calibration"]
        loaded = load_surrogate(a.save(tmp_path / f"{kind}.safetensors"))
        for obs in (False, True):
            for u, v in zip(a.posterior(x, observation_noise=obs), loaded.posterior(x, observation_noise=obs)):
                assert torch.equal(u, v)


@pytest.mark.parametrize(
    ("kind", "name", "value", "pattern"),
    [
        ("bootstrap", "calibration.floor_std", 0.0, r"tensor 'calibration\.floor_std' must be positive"),
        ("bootstrap", "calibration.spread_scale", -1.0, r"tensor 'calibration\.spread_scale' must be positive"),
        ("bootstrap", "calibration.floor_std", math.nan, r"non-finite values in tensor 'calibration\.floor_std'"),
        ("ucb", "bonus.scale", 0.0, r"tensor 'bonus\.scale' must be > 0"),
    ],
)
def test_non_positive_calibration_is_refused_on_load(tmp_path, kind, name, value, pattern):
    x, y = toy_data(n=40)
    model = make_surrogate(kind, input_dim=D, **SMALL_MLP)
    model.fit(x, y, seed=0)
    good = model.save(tmp_path / "good.safetensors")
    tensors = load_file(str(good))
    assert name in tensors
    tensors[name] = torch.tensor([value], dtype=torch.float64)
    header = {k: v for k, v in copy.deepcopy(read_header(good)).items() if k not in ("format", "version")}
    bad = save_checkpoint(tmp_path / "bad.safetensors", tensors, header)
    with pytest.raises(SurrogateCheckpointError, match=pattern):
        load_surrogate(bad)


# ---------------------------------------------------------------- coverage of a smooth function's truth
def _smooth(n: int, d: int, generator: torch.Generator, noise: float = 0.1):
    """Inputs `(n, d)` in [-1, 1]^d, true values and noisy observations of a fixed smooth function."""
    fixed = torch.Generator().manual_seed(99)
    a, b, c = (torch.randn(d, generator=fixed) / d**0.5 for _ in range(3))
    x = torch.rand(n, d, generator=generator) * 2 - 1
    f = torch.sin(2 * x @ a) + 0.5 * torch.cos(3 * x @ b) + (x @ c) ** 2
    return x, f, f + noise * torch.randn(n, generator=generator)


@pytest.fixture(scope="module")
def smooth_data():
    g = torch.Generator().manual_seed(101)
    return _smooth(800, 8, g), _smooth(2000, 8, g)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(MLPUCBSurrogate, {}), (BootstrapEnsembleSurrogate, {"num_heads": 4})],
    ids=["ucb", "bootstrap"],
)
def test_calibrated_intervals_cover_the_true_function(smooth_data, cls, kwargs):
    """8-d smooth function, 800 noisy answers (80 of them the validation split), 2000 held-out points: the
    epistemic mean ± 1.96·std covers the true values 85-99% of the time (95% nominal; the uncalibrated
    widths covered 20-60% on the 16-d benchmark). Over fit seeds 0-7 the figures were 0.92-0.97."""
    (x, _, y), (xt, ft, yt) = smooth_data
    model = cls(8, hidden=(64, 32, 16), **kwargs)
    model.fit(x, y, seed=1)
    out = calibration_metrics(model, xt, yt, truth=ft)
    assert 0.85 <= out["truth_coverage_95"] <= 0.99, out
    assert 0.85 <= out["coverage_95"] <= 0.99, out
    assert out["spearman"] > 0.8
