import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from das.features import Featurizer
from das.rewards.base import Reward
from das.rewards.colorfulness import ColorfulnessReward, colorfulness
from world import PROMPTS, WorldFeaturizer, make_dataset, prompt_label, render_scene
from world.classify import SceneClassifier
from world.tokenizer import save_tokenizer


def test_world_has_at_least_eight_distinct_prompts():
    assert len(set(PROMPTS)) >= 8
    assert prompt_label("a red circle") == ("red", "circle")
    with pytest.raises(ValueError, match="not a prompt"):
        prompt_label("a purple dog")


def test_rendering_is_deterministic_by_seed_and_varies_within_a_prompt():
    a, b, c = render_scene("a blue square", 3), render_scene("a blue square", 3), render_scene("a blue square", 4)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    x1, l1 = make_dataset(2, seed=5)
    x2, l2 = make_dataset(2, seed=5)
    assert x1.shape == (2 * len(PROMPTS), 3, 32, 32) and torch.equal(x1, x2) and l1 == l2


def test_classifier_recognises_rendered_scenes():
    clf = SceneClassifier.fit(num_per_prompt=30, seed=1)
    images, labels = make_dataset(20, seed=99)
    assert (clf.predict(images) == np.array(labels)).mean() >= 0.95


def test_tokenizer_files_load_and_give_one_token_per_word(tmp_path):
    words = {w for p in PROMPTS for w in p.split()}
    save_tokenizer(str(tmp_path), words)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    for w in words:
        assert len(tok.tokenize(w)) == 1, w
    ids = tok("a green triangle", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[0] == tok.bos_token_id and ids[4] == tok.eos_token_id and len(ids) == tok.model_max_length
    assert len(tok.tokenize("a purple triangle")) > 3  # unknown words fall back to characters


def test_colorfulness_matches_the_formula_and_is_differentiable():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=gen)
    r, g, b = (x * 255).double().unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    ref = (rg.std(1, unbiased=False) ** 2 + yb.std(1, unbiased=False) ** 2).sqrt() + 0.3 * (
        rg.mean(1) ** 2 + yb.mean(1) ** 2
    ).sqrt()
    assert torch.allclose(colorfulness(x).double(), ref, rtol=1e-4)
    grey = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    reward = ColorfulnessReward()
    assert isinstance(reward, Reward) and reward.differentiable
    assert reward(grey).item() < 1e-2
    reward(grey).sum().backward()
    assert torch.isfinite(grey.grad).all()


def test_featurizer_is_frozen_deterministic_and_differentiable():
    f1, f2 = WorldFeaturizer(seed=0), WorldFeaturizer(seed=0)
    assert isinstance(f1, Featurizer) and f1.dim == 128
    assert not list(f1.parameters())
    x = (make_dataset(1, seed=0)[0].float() / 255).requires_grad_(True)
    y = f1(x)
    assert y.shape == (len(PROMPTS), f1.dim) and torch.equal(y, f2(x))
    assert not torch.equal(y, WorldFeaturizer(seed=1)(x))
    y.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Different prompts give different features.
    assert torch.cdist(y, y).fill_diagonal_(1.0).min() > 1e-3
