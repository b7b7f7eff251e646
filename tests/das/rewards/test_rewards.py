import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from das import DASSampler, DASSettings
from das.adapters.loading import WeightsNotAvailableError
from das.clip import CLIPImageFeaturizer, clip_preprocess
from das.features import Featurizer
from das.rewards import REFERENCE_KL_COEFF, AestheticMLP, JPEGCompressibility, make_reward
from das.rewards.optional import MissingExtraError
from tests.tiny_components import tiny_clip_model, tiny_tokenizer

PROMPTS = ["a cat", "a dog"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    tiny_clip_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mlp") / "aesthetic.safetensors"
    save_file(AestheticMLP(16).state_dict(), str(path))
    return str(path)


def images(n=2, size=24):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)


def test_preprocess_keeps_graph_and_shape():
    x = images(size=40)
    out = clip_preprocess(x, 32)
    assert out.shape == (2, 3, 32, 32)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_featurizer_protocol(clip_folder):
    featurizer = CLIPImageFeaturizer.from_pretrained(clip_folder)
    assert isinstance(featurizer, Featurizer) and featurizer.dim == 16
    features = featurizer(images())
    assert features.shape == (2, 16)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    assert not any(p.requires_grad for p in featurizer.parameters())


@pytest.mark.parametrize("name", ["aesthetic", "clipscore", "pickscore", "multi"])
def test_gradients_flow(name, clip_folder, mlp_path):
    kwargs = {
        "aesthetic": dict(clip_model=clip_folder, mlp_path=mlp_path),
        "clipscore": dict(clip_model=clip_folder),
        "pickscore": dict(model=clip_folder, processor=clip_folder),
        "multi": dict(clip_model=clip_folder, mlp_path=mlp_path, weight=0.3),
    }[name]
    reward = make_reward(name, **kwargs)
    assert reward.differentiable
    x = images()
    score = reward(x, PROMPTS)
    assert score.shape == (2,) and score.dtype == torch.float32
    score.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_aesthetic_matches_manual_pipeline(clip_folder, mlp_path):
    reward = make_reward("aesthetic", clip_model=clip_folder, mlp_path=mlp_path)
    x = images().detach()
    clip = reward.featurizer.model
    embeds = clip.get_image_features(pixel_values=clip_preprocess(x, 32)).pooler_output
    embeds = embeds / embeds.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(reward(x), reward.mlp(embeds))


def test_multi_is_the_paper_weighting(clip_folder, mlp_path):
    x = images().detach()
    multi = make_reward("multi", clip_model=clip_folder, mlp_path=mlp_path, weight=0.3)
    aesthetic = make_reward("aesthetic", clip_model=clip_folder, mlp_path=mlp_path)(x)
    clip = make_reward("clipscore", clip_model=clip_folder)(x, PROMPTS)
    torch.testing.assert_close(multi(x, PROMPTS), 0.3 * aesthetic + 0.7 * 20 * clip)


def test_text_embeddings_cached(clip_folder):
    reward = make_reward("clipscore", clip_model=clip_folder)
    calls = []
    original = reward.model.get_text_features
    reward.model.get_text_features = lambda **kw: calls.append(1) or original(**kw)
    for _ in range(3):
        reward(images().detach(), PROMPTS)
    assert len(calls) == 1


def test_aesthetic_mlp_pth_weights_only(tmp_path):
    mlp = AestheticMLP(16)
    torch.save(mlp.state_dict(), tmp_path / "w.pth")
    loaded = AestheticMLP.from_file(tmp_path / "w.pth", 16)
    torch.testing.assert_close(loaded.layers[0].weight, mlp.layers[0].weight)
    with pytest.raises(WeightsNotAvailableError, match="mlp_path"):
        AestheticMLP.from_file(tmp_path / "missing.pth")


def test_jpeg_is_negated_kilobytes_and_gradient_free():
    reward = make_reward("jpeg")
    assert isinstance(reward, JPEGCompressibility) and not reward.differentiable
    flat = torch.full((1, 3, 32, 32), 0.5)
    noisy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = reward(torch.cat([flat, noisy]))
    assert scores.shape == (2,) and (scores < 0).all() and scores[0] > scores[1]
    assert not scores.requires_grad


def test_jpeg_runs_gradient_free_in_sampler():
    import tempfile

    from das.adapters.pixel import PixelUNetAdapter
    from tests.tiny_components import save_pixel_model

    adapter = PixelUNetAdapter.from_pretrained(save_pixel_model(tempfile.mkdtemp(), conditional=False), num_steps=2)
    sampler = DASSampler(adapter, DASSettings(kl_coeff=REFERENCE_KL_COEFF["jpeg"], num_particles=2))
    reward = make_reward("jpeg")
    assert sampler.proposal_gradient(reward).uses_gradient is False
    result = sampler.sample(["", ""], reward, torch.Generator().manual_seed(0))
    assert torch.isfinite(result.rewards).all()


def test_unknown_reward_lists_valid_names():
    with pytest.raises(
        ValueError, match="aesthetic, clipscore, colorfulness, hpsv2, imagereward, jpeg, multi, pickscore"
    ):
        make_reward("beauty")


def test_aesthetic_without_mlp_path_is_clear(clip_folder):
    with pytest.raises(WeightsNotAvailableError, match="mlp_path"):
        make_reward("aesthetic", clip_model=clip_folder)


def test_missing_clip_offline(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotAvailableError, match="made-up/clip-model"):
        make_reward("clipscore", clip_model="made-up/clip-model")


@pytest.mark.skipif(importlib.util.find_spec("ImageReward") is not None, reason="ImageReward is installed")
def test_imagereward_names_the_extra():
    with pytest.raises(MissingExtraError, match=r'pip install "das-toolkit\[imagereward\]"'):
        make_reward("imagereward")


@pytest.mark.skipif(importlib.util.find_spec("hpsv2") is not None, reason="hpsv2 is installed")
def test_hpsv2_names_the_extra():
    with pytest.raises(MissingExtraError, match=r'pip install "das-toolkit\[hpsv2\]"'):
        make_reward("hpsv2")
