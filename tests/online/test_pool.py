"""Candidate pools in the loop (issue 25): round 0 covers a pretrained pool, later rounds pick their
queries from a DAS pool by a batch acquisition; the staged batch is the picked one, so a kill and a
resume mid-round ask nothing twice; without the new settings nothing changes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import surrogate.batch_selection as batch_selection
from config.online_base import NO_POOL, WORLD_POOL, online_config
from online.loop import run_training
from online.run_directory import complete_rounds
from online.validation import ADDED_FIELDS
from tests.online.test_kill_resume import kill_and_resume

POOL_ARGS = (
    "--config.loop.pool_size=6",
    "--config.loop.acquisition=penalized",
    "--config.loop.pool_pretrained=2",  # 4 DAS candidates and 2 pretrained ones
    "--config.loop.initial_pool_size=8",
    "--config.loop.initial_selection=maximin",
    "--config.oracle.batch_size=1",  # one item per call: a kill after the first answer lands mid-round
)


def test_the_new_fields_default_to_the_behaviour_before_pools_outside_the_world_variants():
    """Stable Diffusion variants (and a run made before the fields) keep the loop without a pool; the world
    variants choose from a pool (the benchmark's default method), the rating page's excepted."""
    for variant in ("aesthetic", "jpeg", "tiny_human"):
        config = online_config("ucb", variant, method="test")
        for field, old in ADDED_FIELDS.items():
            if field.startswith("loop.") and field != "loop.images_per_prompt":
                assert config.loop[field.split(".", 1)[1]] == old, (variant, field)
    new = {"loop.pool_size", "loop.acquisition", "loop.pool_pretrained", "loop.initial_pool_size"}
    assert new | {"loop.initial_selection"} <= set(ADDED_FIELDS)
    assert {f"loop.{field}": value for field, value in NO_POOL.items() if field != "images_per_prompt"} == {
        field: value
        for field, value in ADDED_FIELDS.items()
        if field.startswith("loop.") and "pool" in field or field in ("loop.acquisition", "loop.initial_selection")
    }
    for variant in ("tiny_jpeg", "tiny_rare", "tiny_colorfulness", "tiny_multi"):
        loop = online_config("gp", variant, method="test").loop
        assert {field: loop[field] for field in WORLD_POOL} == WORLD_POOL
        assert online_config("gp", variant, method="test").surrogate.kwargs.pca_dim is None


@pytest.mark.parametrize("rule", ["qucb", "qlognei"])
def test_a_run_with_pools_picks_each_batch_from_its_pool(rule, make_config, accelerator, monkeypatch):
    seen = {"cover": [], "select": []}
    real_cover, real_select = batch_selection.cover, batch_selection.select_batch

    def spy_cover(features, count, *args, **kwargs):
        seen["cover"].append((features.shape[0], count))
        return real_cover(features, count, *args, **kwargs)

    def spy_select(surrogate, features, count, *args, **kwargs):
        seen["select"].append((features.shape[0], count, kwargs.get("baseline") is not None))
        picked = real_select(surrogate, features, count, *args, **kwargs)
        seen.setdefault("picked_features", []).append(features[picked].cpu())
        return picked

    import online.loop

    real_sample = online.loop.sample_prompts

    def spy_sample(setup, rewards, prompts, *args):
        seen.setdefault("sampled", []).append((len(prompts), setup.settings.num_particles))
        return real_sample(setup, rewards, prompts, *args)

    monkeypatch.setattr(online.loop, "sample_prompts", spy_sample)
    monkeypatch.setattr(batch_selection, "cover", spy_cover)
    monkeypatch.setattr(batch_selection, "select_batch", spy_select)
    config = make_config()
    config.loop.pool_size, config.loop.acquisition = 12, rule
    config.loop.pool_pretrained = 4 if rule == "qucb" else 0
    config.loop.initial_pool_size, config.loop.initial_selection = 10, "kmeanspp"
    run_dir = run_training(config, accelerator)

    assert complete_rounds(run_dir) == [0, 1, 2]
    assert seen["cover"] == [(10, 6)]
    assert seen["select"] == [(12, 4, rule == "qlognei")] * 2
    # (prompts, particles) of each sampler run: round 0 pretrained; then DAS, with 4 pretrained candidates for qucb
    guided = [(8, 2), (4, 1)] if rule == "qucb" else [(12, 2)]
    assert seen["sampled"] == [(10, 1), *guided, *guided]
    for k, size in enumerate([6, 4, 4]):
        shard = load_file(run_dir / "data" / f"round_{k:04d}.safetensors")
        assert shard["features"].shape[0] == size
        if k:  # the staged (and answered) rows are the picked candidates, in the pool's order
            picked = seen["picked_features"][k - 1]
            assert {tuple(row.tolist()) for row in shard["features"].float()} == {
                tuple(row.tolist()) for row in picked.float()
            }


def test_killed_mid_round_with_a_pool_resumes_asking_nothing_twice(tiny_model, tmp_path):
    # each round killed once its pool is sampled (nothing staged) and once after its first answer (the batch staged)
    crashes = ("sampled:0", "query:0", "sampled:1", "query:1")
    run_dir = kill_and_resume(tiny_model, tmp_path, "UCB", crashes, POOL_ARGS)
    rounds = len(complete_rounds(run_dir))
    asked = (tmp_path / "reference.log").read_text().splitlines()
    images = torch.cat([load_file(run_dir / "data" / f"round_{k:04d}.safetensors")["images"] for k in range(rounds)])
    assert images.shape[0] == len(asked)
