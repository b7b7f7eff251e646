"""The steppable sampler: ``init`` + ``step``s + ``finish`` is ``sample``; the callback; one sampler, many rewards."""

import dataclasses

import pytest
import torch

from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings, StepInfo
from das.toy import nine_gaussians, paper_toy_reward
from das.toy.adapter import ToyAdapter
from tests.das import das_reference

FIELDS = (*das_reference.FIELDS, "ess", "lam", "resampled", "degenerate_steps")


def _toy_case(name="toy_full_exponential"):
    """A recorded case's sampler (resampling, tempering, selection by weight), reward, prompts and seed."""
    case = das_reference.CASES[name]
    adapter, reward, proposal = das_reference.toy_model(case.proposal)
    sampler = DASSampler(adapter, das_reference.settings_of(case.options), proposal_adapter=proposal)
    return sampler, reward, das_reference.PROMPTS["toy"], case.seed


def _assert_equal(a, b):
    for field in FIELDS:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(a.trace.reward, b.trace.reward)


@pytest.mark.parametrize("name", ["toy_full_exponential", "toy_jacobian_free_adaptive", "toy_realigned_proposal"])
def test_init_steps_and_finish_are_sample_bit_for_bit(name):
    sampler, reward, prompts, seed = _toy_case(name)
    expected = sampler.sample(prompts, reward, torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(prompts, reward, generator)
    assert state.step == 0
    while state.step < sampler.num_steps:
        state, _ = sampler.step(state, reward, generator)
    result = sampler.finish(state, generator)
    _assert_equal(result, expected)
    assert expected.resampled.any()  # the chain resampled on the way


def test_a_state_stepped_twice_keeps_its_own_trace():
    sampler, reward, prompts, seed = _toy_case()
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(prompts, reward, generator)
    first, _ = sampler.step(state, reward, torch.Generator().manual_seed(1))
    second, _ = sampler.step(state, reward, torch.Generator().manual_seed(2))
    assert len(state.trace.lam) == 1 and len(first.trace.lam) == len(second.trace.lam) == 2
    assert not torch.equal(first.x, second.x)


def test_the_callback_sees_every_transition_once_with_its_info():
    sampler, reward, prompts, seed = _toy_case()
    seen: list[tuple[int, StepInfo]] = []
    start = sampler.init(prompts, reward, torch.Generator().manual_seed(seed))
    result = sampler.sample(
        prompts,
        reward,
        torch.Generator().manual_seed(seed),
        callback=lambda state, info: seen.append((state.step, info)),
    )
    assert [step for step, _ in seen] == [info.step for _, info in seen] == list(range(1, sampler.num_steps + 1))
    infos = [info for _, info in seen]
    assert torch.equal(torch.stack([i.ess for i in infos]), result.ess[:-1])
    assert torch.equal(torch.stack([i.resampled for i in infos]), result.resampled)
    assert torch.equal(torch.stack([i.lam for i in infos]), result.lam[1:])
    assert torch.equal(torch.stack([i.reward for i in infos]), result.trace.reward[1:])
    increments = torch.stack([i.log_increment for i in infos]).sum(0)
    assert torch.allclose(start.log_normalizer + increments, result.log_normalizer)


def test_one_sampler_takes_a_different_reward_per_call():
    """The reward is an argument: one sampler gives, call by call, what a sampler built per reward gives."""
    adapter = ToyAdapter(nine_gaussians(), num_steps=6)
    settings = DASSettings(kl_coeff=0.7, num_particles=5, ess_threshold=0.8, tempering="adaptive")
    shifted = FunctionReward(lambda x: paper_toy_reward()(x + 1.0), differentiable=True)
    rewards = [paper_toy_reward(), shifted, FunctionReward(lambda x: -x.pow(2).sum(-1), differentiable=False)]
    shared = DASSampler(adapter, settings)
    results = []
    for seed, reward in enumerate(rewards):
        result = shared.sample(["a", "b"], reward, torch.Generator().manual_seed(seed))
        _assert_equal(
            result, DASSampler(adapter, settings).sample(["a", "b"], reward, torch.Generator().manual_seed(seed))
        )
        results.append(result)
    same_seed = shared.sample(["a", "b"], shifted, torch.Generator().manual_seed(0))
    assert not torch.equal(same_seed.samples, results[0].samples)  # the reward, not the seed, moved the particles


def test_step_and_finish_refuse_a_chain_at_the_wrong_point():
    sampler, reward, prompts, seed = _toy_case()
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(prompts, reward, generator)
    with pytest.raises(ValueError, match="steps left"):
        sampler.finish(state, generator)
    state = dataclasses.replace(state, step=sampler.num_steps)
    with pytest.raises(ValueError, match="chain has ended"):
        sampler.step(state, reward, generator)
    with pytest.raises(ValueError, match="at least one prompt"):
        sampler.init([], reward, generator)


def test_settings_are_frozen_and_replace_gives_a_variant():
    settings = DASSettings(kl_coeff=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.num_particles = 8
    assert dataclasses.replace(settings, num_particles=1).num_particles == 1 and settings.num_particles == 4
    with pytest.raises(ValueError, match="num_particles"):
        dataclasses.replace(settings, num_particles=0)
