"""A round's sampling: one sampler per batch, each call with its own reward (a fresh Thompson draw per call)."""

import torch

from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings
from das.toy import nine_gaussians, paper_toy_reward
from das.toy.adapter import ToyAdapter
from online.sampling import SamplingSetup, sample_prompts


def test_a_batch_builds_one_sampler_and_gives_each_call_its_own_reward(accelerator, monkeypatch):
    built = []
    real_init = DASSampler.__init__

    def counting_init(self, *args, **kwargs):
        built.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(DASSampler, "__init__", counting_init)
    scored = []

    def reward_for_call(call: int) -> FunctionReward:
        def score(x):
            scored.append((call, x.shape[0]))
            return paper_toy_reward()(x)

        return FunctionReward(score, differentiable=True)

    settings = DASSettings(kl_coeff=1.0, num_particles=3, selection="all")
    setup = SamplingSetup(ToyAdapter(nine_gaussians(), num_steps=4), lambda images: images, settings, 2)
    batch = sample_prompts(setup, reward_for_call, ["a", "b", "c", "d", "e"], 1, 0, accelerator)
    assert len(built) == 1  # one sampler for the three calls
    rows = {}
    for call, n in scored:
        rows.setdefault(call, set()).add(n)
    assert rows == {0: {6}, 1: {6}, 2: {3}}  # call i scored its own prompts' particles with reward i
    assert batch["features"].shape == (5, 2) and batch["prompts"] == ["a", "b", "c", "d", "e"]
    assert torch.all(batch["ess_fraction"] <= 1)
