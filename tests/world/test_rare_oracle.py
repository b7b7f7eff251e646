"""The rare-colour oracle against its closed form on flat images."""

import math

import pytest
import torch

from world.oracles import (
    RARE_DECOY,
    RARE_DECOY_HEIGHT,
    RARE_DECOY_WIDTH,
    RARE_TARGET,
    RARE_TARGET_WIDTH,
    RareColourReward,
    opponent_means,
    rare_target_score,
)


def flat(rg: float, yb: float, g: float = 0.5) -> torch.Tensor:
    """A 1×3×8×8 image of one colour whose opponent means are (rg, yb)."""
    r = g + rg
    b = 0.5 * (r + g) - yb
    return torch.tensor([r, g, b]).view(1, 3, 1, 1).expand(1, 3, 8, 8).clone()


def closed_form(rg: float, yb: float) -> float:
    def bump(centre, width):
        return math.exp(-((rg - centre[0]) ** 2 + (yb - centre[1]) ** 2) / (2 * width**2))

    return bump(RARE_TARGET, RARE_TARGET_WIDTH) + RARE_DECOY_HEIGHT * bump(RARE_DECOY, RARE_DECOY_WIDTH)


@pytest.mark.parametrize("rg, yb", [RARE_TARGET, RARE_DECOY, (0.0, 0.0), (0.2, -0.1), (-0.3, 0.25)])
def test_the_reward_of_a_flat_image_is_the_two_bumps_closed_form(rg, yb):
    image = flat(rg, yb)
    assert opponent_means(image)[0].tolist() == pytest.approx([rg, yb], abs=1e-6)
    assert float(RareColourReward()(image)) == pytest.approx(closed_form(rg, yb), rel=1e-5)


def test_the_target_beats_the_decoy_and_counts_as_a_hit():
    reward = RareColourReward()
    at_target, at_decoy = float(reward(flat(*RARE_TARGET))), float(reward(flat(*RARE_DECOY)))
    # at the target: 1 + 0.4·exp(−d²/(2·0.1²)), d = |target − decoy| = 0.2·√2
    assert at_target == pytest.approx(1 + 0.4 * math.exp(-0.08 / 0.02), rel=1e-5)
    assert at_target > 2 * at_decoy
    assert float(rare_target_score(flat(*RARE_TARGET))) == pytest.approx(1.0)
    assert float(rare_target_score(flat(*RARE_DECOY))) < 0.01


def test_it_is_differentiable_and_its_gradient_points_uphill():
    image = flat(0.1, 0.1).requires_grad_(True)
    RareColourReward()(image).sum().backward()
    assert torch.isfinite(image.grad).all()
    # towards the target (0.15, 0.15): more red than green
    assert float(image.grad[0, 0].sum()) > float(image.grad[0, 1].sum())
