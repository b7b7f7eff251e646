"""Tempering schedules, adaptive tempering's ESS target in particular."""

import pytest
import torch

from das.resampling import effective_sample_size
from das.tempering import (
    TEMPERINGS,
    AdaptiveTempering,
    ExponentialTempering,
    GradNormRatioTempering,
    NoTempering,
    PolynomialTempering,
    TemperingInfo,
    TemperingSchedule,
    make_tempering,
    solve_adaptive_lambda,
    tempering_from_options,
)


def _info(index, b=3, k=8, **kw):
    """What a schedule sees when asked for ``λ_index`` (the particles after `index` transitions)."""
    base = dict(
        index=index,
        num_steps=100,
        lam=torch.zeros(b),
        log_weights=torch.zeros(b, k),
        reward_over_alpha=torch.zeros(b, k),
    )
    base.update(kw)
    return TemperingInfo(**base)


def test_exponential_matches_the_formula_and_start():
    schedule = ExponentialTempering(gamma=0.008, start=10)
    assert torch.all(schedule(_info(0)) == 0)
    assert torch.all(schedule(_info(6)) == 0)
    index = 41
    expected = min((1.008) ** (index - 10) - 1, 1.0)
    assert torch.allclose(schedule(_info(index)), torch.full((3,), expected))
    assert torch.all(schedule(_info(100)) <= 1.0)


def test_polynomial_and_none():
    assert torch.allclose(PolynomialTempering(power=2.0)(_info(50)), torch.full((3,), 0.25))
    assert torch.all(NoTempering()(_info(0)) == 1.0)


def test_polynomial_matches_its_formula_with_a_start():
    """``λ_j = min(max(j − s, 0) / max(n − s, 1), 1)^p`` with n = 100, s = 10, p = 2."""
    schedule = PolynomialTempering(power=2.0, start=10)
    for index, expected in ((0, 0.0), (10, 0.0), (55, 0.25), (100, 1.0), (120, 1.0)):
        assert torch.allclose(schedule(_info(index)), torch.full((3,), expected)), index


def test_rule_based_schedules_stay_at_zero_up_to_the_start_index():
    guidance, drift = torch.full((3, 8), 1.0), torch.full((3, 8), 1.0)
    reward = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    for schedule in (AdaptiveTempering(start=5), GradNormRatioTempering(start=5)):
        kw = dict(reward_over_alpha=reward, guidance_norm=guidance, drift_norm=drift)
        assert torch.all(schedule(_info(5, **kw)) == 0), schedule.name
        assert torch.all(schedule(_info(6, **kw)) > 0), schedule.name


def test_registry_holds_every_schedule_under_its_name():
    assert sorted(TEMPERINGS) == ["adaptive", "exponential", "grad_norm_ratio", "none", "polynomial"]
    for name, cls in TEMPERINGS.items():
        assert issubclass(cls, TemperingSchedule) and cls.name == name
        assert isinstance(make_tempering(name), cls)


def test_schedules_take_only_their_sampler_options():
    options = dict(start=3, gamma=0.1, ess_threshold=0.7)
    exponential = tempering_from_options("exponential", **options)
    assert (exponential.gamma, exponential.start) == (0.1, 3)
    adaptive = tempering_from_options("adaptive", **options)
    assert (adaptive.ess_threshold, adaptive.start) == (0.7, 3)
    assert tempering_from_options("polynomial", **options).start == 3
    assert isinstance(tempering_from_options("none", **options), NoTempering)
    with pytest.raises(ValueError, match="grad_norm_ratio"):
        tempering_from_options("linearish", **options)


def test_adaptive_hits_its_ess_target():
    generator = torch.Generator().manual_seed(0)
    b, k, tau = 64, 32, 0.5
    log_w = 0.3 * torch.randn(b, k, generator=generator, dtype=torch.float64)
    reward = 10.0 * torch.randn(b, k, generator=generator, dtype=torch.float64)
    lam = 0.2 * torch.rand(b, generator=generator, dtype=torch.float64)
    new = solve_adaptive_lambda(log_w, reward, lam, tau, iterations=50)
    ess = effective_sample_size(log_w + (new - lam).unsqueeze(-1) * reward)
    interior = new < 1.0
    assert interior.any()
    start_ok = effective_sample_size(log_w) >= tau * k
    hits = interior & start_ok
    assert torch.allclose(ess[hits], torch.full_like(ess[hits], tau * k), rtol=1e-6)
    assert (ess[~interior] >= tau * k).all()
    assert (new >= lam).all() and (new <= 1.0).all()


def test_adaptive_is_vectorized_row_by_row_identical():
    generator = torch.Generator().manual_seed(1)
    log_w = torch.randn(6, 10, generator=generator)
    reward = 5 * torch.randn(6, 10, generator=generator)
    lam = torch.zeros(6)
    together = solve_adaptive_lambda(log_w, reward, lam, 0.7)
    alone = torch.cat(
        [solve_adaptive_lambda(log_w[i : i + 1], reward[i : i + 1], lam[i : i + 1], 0.7) for i in range(6)]
    )
    assert torch.allclose(together, alone)
    schedule = AdaptiveTempering(ess_threshold=0.7)
    assert torch.allclose(schedule(_info(4, b=6, k=10, log_weights=log_w, reward_over_alpha=reward)), together)


def test_grad_norm_ratio_caps_the_guidance_shift():
    schedule = GradNormRatioTempering(ratio=0.5)
    guidance = torch.full((2, 4), 10.0)
    drift = torch.full((2, 4), 2.0)
    lam = schedule(_info(4, b=2, k=4, guidance_norm=guidance, drift_norm=drift))
    assert torch.allclose(lam * guidance.mean(-1), 0.5 * drift.mean(-1))
    # never decreases, never exceeds 1
    big = schedule(_info(4, b=2, k=4, lam=torch.full((2,), 0.3), guidance_norm=guidance, drift_norm=drift))
    assert torch.allclose(big, torch.full((2,), 0.3))
    tiny = schedule(_info(4, b=2, k=4, guidance_norm=guidance * 1e-6, drift_norm=drift))
    assert torch.all(tiny == 1.0)


def test_make_tempering_rejects_unknown_names():
    with pytest.raises(ValueError, match="adaptive"):
        make_tempering("linearish")
    with pytest.raises(ValueError):
        AdaptiveTempering(ess_threshold=1.5)
