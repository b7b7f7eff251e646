import pytest
import torch
from diffusers import DDIMScheduler

from das import DASSampler, DASSettings
from das.adapters.loading import WeightsNotAvailableError
from das.adapters.pixel import PixelUNetAdapter
from das.rewards import FunctionReward
from tests.das.adapters.adapter_builders import assert_transition_is_the_ddim_step
from tests.tiny_components import save_pixel_model

PROMPTS = ["a cat", "a red dog"]


def brightness():
    return FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")


@pytest.fixture(scope="module")
def cond_folder(tmp_path_factory):
    return save_pixel_model(tmp_path_factory.mktemp("pixel_cond"), conditional=True)


@pytest.fixture(scope="module")
def uncond_folder(tmp_path_factory):
    return save_pixel_model(tmp_path_factory.mktemp("pixel_uncond"), conditional=False)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_conditional_das_end_to_end(cond_folder, guidance):
    adapter = PixelUNetAdapter.from_pretrained(cond_folder, num_steps=3, guidance_scale=guidance)
    result = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=2)).sample(
        PROMPTS, brightness(), torch.Generator().manual_seed(0)
    )
    assert result.images.shape == (2, 2, 3, 8, 8)
    assert torch.isfinite(result.rewards).all()
    assert result.ess.shape == (4, 2)


def test_unconditional_das_end_to_end(uncond_folder):
    adapter = PixelUNetAdapter.from_pretrained(uncond_folder, num_steps=2)
    assert adapter.encode_prompts(PROMPTS) == {}
    result = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=2)).sample(
        PROMPTS, brightness(), torch.Generator().manual_seed(0)
    )
    assert result.images.shape == (2, 2, 3, 8, 8)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_transition_matches_scheduler_step(cond_folder, eta):
    adapter = PixelUNetAdapter.from_pretrained(cond_folder, num_steps=4, eta=eta, guidance_scale=2.0)
    cond = adapter.encode_prompts(PROMPTS)
    g = torch.Generator().manual_seed(1)
    x = adapter.initial_noise(2, g)
    step = 1
    t = adapter.scheduler.timesteps[step]
    # Reference: the UNet with CFG done by hand, then DDIMScheduler.step with a known noise.
    embeds = torch.cat([cond["negative_prompt_embeds"], cond["prompt_embeds"]])
    out = adapter.unet(torch.cat([x, x]), t, encoder_hidden_states=embeds).sample
    reference = DDIMScheduler.from_pretrained(cond_folder, subfolder="scheduler")
    reference.set_timesteps(4)
    assert reference.timesteps[step] == t
    tr = assert_transition_is_the_ddim_step(adapter, cond, x, step, out, 2.0, reference, eta, g)
    if eta == 0:
        assert float(tr.std) == 0.0


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision(cond_folder, dtype):
    adapter = PixelUNetAdapter.from_pretrained(cond_folder, num_steps=2, dtype=dtype)
    result = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=2)).sample(
        PROMPTS, brightness(), torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(result.rewards).all()


def test_custom_size(uncond_folder):
    adapter = PixelUNetAdapter.from_pretrained(uncond_folder, num_steps=2, height=16, width=8)
    assert adapter.initial_noise(3, torch.Generator().manual_seed(0)).shape == (3, 3, 16, 8)


def test_missing_folder_parts(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(WeightsNotAvailableError, match="scheduler/"):
        PixelUNetAdapter.from_pretrained(str(tmp_path))


def test_missing_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotAvailableError, match="no-such-user/no-such-pixel-model"):
        PixelUNetAdapter.from_pretrained("no-such-user/no-such-pixel-model")


def test_unconditional_eta0_reproduces_ddim_pipeline(uncond_folder):
    from diffusers import DDIMPipeline

    adapter = PixelUNetAdapter.from_pretrained(uncond_folder, num_steps=3, eta=0.0)
    zero = FunctionReward(lambda images: images.sum(dim=(1, 2, 3)) * 0.0, differentiable=False)
    result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=2)).sample(
        ["", ""], zero, torch.Generator().manual_seed(5)
    )
    pipe = DDIMPipeline(unet=adapter.unet, scheduler=DDIMScheduler.from_config(adapter.scheduler.config))
    images = pipe(
        batch_size=4, generator=torch.Generator().manual_seed(5), eta=0.0, num_inference_steps=3, output_type="np"
    ).images
    expected = torch.from_numpy(images).permute(0, 3, 1, 2)
    torch.testing.assert_close(result.images.reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)
