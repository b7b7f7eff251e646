"""SD, SDXL and LCM adapters against their real (tiny, random) diffusers pipelines.

The adapter contract (shapes, determinism, decode range, a DAS run) is in ``test_contract.py``.
"""

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler
from diffusers.utils.torch_utils import randn_tensor

from das import DASSampler, DASSettings
from das.adapters.lcm import LCMAdapter
from das.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
from das.rewards import FunctionReward
from tests.das.adapters.adapter_builders import assert_transition_is_the_ddim_step
from tests.tiny_components import tiny_lcm_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPTS = ["a cat", "a red dog"]


def brightness():
    return FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")


def zero():
    return FunctionReward(lambda images: images.sum(dim=(1, 2, 3)) * 0.0, differentiable=False, name="zero")


BUILDERS = {
    "sd": (tiny_sd_pipeline, StableDiffusionAdapter),
    "sdxl": (tiny_sdxl_pipeline, StableDiffusionXLAdapter),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def family(request):
    build, adapter_cls = BUILDERS[request.param]
    return request.param, build(), adapter_cls


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_transition_matches_scheduler_step(family, eta):
    _, pipe, adapter_cls = family
    adapter = adapter_cls(pipe, num_steps=4, eta=eta, guidance_scale=3.0)
    cond = adapter.encode_prompts(PROMPTS)
    g = torch.Generator().manual_seed(1)
    x = adapter.initial_noise(2, g)
    step = 2
    t = adapter.scheduler.timesteps[step]
    out = adapter._model_output(
        torch.cat([x, x]),
        t,
        {k: torch.cat([cond["negative_" + k], cond[k]]) for k in cond if not k.startswith("negative_")},
    )
    reference = DDIMScheduler.from_config(pipe.scheduler.config)
    reference.set_timesteps(4)
    assert reference.timesteps[step] == t
    assert_transition_is_the_ddim_step(adapter, cond, x, step, out, 3.0, reference, eta, g)


def test_zero_reward_eta0_reproduces_pipeline(family):
    name, pipe, adapter_cls = family
    k, steps = 2, 3
    adapter = adapter_cls(pipe, num_steps=steps, eta=0.0, guidance_scale=5.0)
    result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=k)).sample(
        PROMPTS, zero(), torch.Generator().manual_seed(3)
    )
    latents = adapter.initial_noise(len(PROMPTS) * k, torch.Generator().manual_seed(3))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = pipe(
        prompt=PROMPTS,
        num_images_per_prompt=k,
        num_inference_steps=steps,
        guidance_scale=5.0,
        eta=0.0,
        latents=latents.clone(),
        output_type="pt",
    ).images
    torch.testing.assert_close(result.images.reshape(images.shape), images, atol=1e-4, rtol=1e-4)


def test_negative_prompt_changes_unconditional_branch():
    pipe = tiny_sd_pipeline()
    plain = StableDiffusionAdapter(pipe, num_steps=2).encode_prompts(PROMPTS)
    neg = StableDiffusionAdapter(pipe, num_steps=2, negative_prompt="blurry").encode_prompts(PROMPTS)
    torch.testing.assert_close(plain["prompt_embeds"], neg["prompt_embeds"])
    assert not torch.allclose(plain["negative_prompt_embeds"], neg["negative_prompt_embeds"])


def test_prompt_embeddings_are_cached():
    pipe = tiny_sd_pipeline()
    adapter = StableDiffusionAdapter(pipe, num_steps=2)
    calls = []
    original = pipe.encode_prompt
    pipe.encode_prompt = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    adapter.encode_prompts(PROMPTS)
    adapter.encode_prompts(PROMPTS + ["a cat"])
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_and_size(dtype):
    adapter = StableDiffusionAdapter(tiny_sd_pipeline(), num_steps=2, dtype=dtype, height=32, width=16)
    assert adapter.latent_shape == (4, 16, 8)
    result = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=2)).sample(
        PROMPTS, brightness(), torch.Generator().manual_seed(0)
    )
    assert result.images.shape == (2, 2, 3, 32, 16) and torch.isfinite(result.rewards).all()


# ---------------------------------------------------------------------------- LCM
@pytest.fixture(scope="module")
def lcm_pipe():
    return tiny_lcm_pipeline()


@pytest.mark.parametrize("step", [0, 1, 2])
def test_lcm_transition_matches_step(lcm_pipe, step):
    adapter = LCMAdapter(lcm_pipe, num_steps=3)
    cond = adapter.encode_prompts(PROMPTS)
    x = adapter.initial_noise(2, torch.Generator().manual_seed(1))
    t = adapter.scheduler.timesteps[step]
    model_out = lcm_pipe.unet(
        x, t, timestep_cond=cond["timestep_cond"], encoder_hidden_states=cond["prompt_embeds"]
    ).sample
    reference = LCMScheduler.from_config(lcm_pipe.scheduler.config)
    reference.set_timesteps(3)
    reference._step_index = step
    expected = reference.step(model_out, t, x, generator=torch.Generator().manual_seed(7))
    tr = adapter.transition(x, step, cond)
    noise = randn_tensor(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(tr.x0_hat, expected.denoised)
    torch.testing.assert_close(tr.mean + tr.std * noise, expected.prev_sample)
    assert (float(tr.std) == 0.0) == (step == 2)


def test_lcm_chain_reproduces_pipeline(lcm_pipe):
    adapter = LCMAdapter(lcm_pipe, num_steps=3, guidance_scale=8.5)
    cond = {k: v.repeat_interleave(2, 0) for k, v in adapter.encode_prompts(PROMPTS).items()}
    latents = adapter.initial_noise(4, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(11)
    x = latents
    for step in range(adapter.num_steps):
        tr = adapter.transition(x, step, cond)
        x = tr.mean if step == adapter.num_steps - 1 else tr.mean + tr.std * randn_tensor(x.shape, generator=g)
    images = lcm_pipe(
        prompt=PROMPTS,
        num_images_per_prompt=2,
        num_inference_steps=3,
        guidance_scale=8.5,
        latents=latents.clone(),
        generator=torch.Generator().manual_seed(11),
        output_type="pt",
    ).images
    torch.testing.assert_close(adapter.decode(x), images, atol=1e-4, rtol=1e-4)


def test_lcm_one_step_das_reproduces_pipeline(lcm_pipe):
    adapter = LCMAdapter(lcm_pipe, num_steps=1)
    result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=2)).sample(
        PROMPTS, zero(), torch.Generator().manual_seed(3)
    )
    latents = adapter.initial_noise(4, torch.Generator().manual_seed(3))
    images = lcm_pipe(
        prompt=PROMPTS, num_images_per_prompt=2, num_inference_steps=1, latents=latents.clone(), output_type="pt"
    ).images
    torch.testing.assert_close(result.images.reshape(images.shape), images, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "adapter_cls, make_pipeline",
    [
        (StableDiffusionAdapter, lambda: tiny_sd_pipeline()),
        (StableDiffusionXLAdapter, lambda: tiny_sdxl_pipeline()),
        (LCMAdapter, lambda: tiny_lcm_pipeline()),
    ],
    ids=["sd", "sdxl", "lcm"],
)
def test_from_pretrained_local_folder(tmp_path, adapter_cls, make_pipeline):
    """The one ``from_pretrained`` loads each family's own pipeline class from a saved folder."""
    make_pipeline().save_pretrained(tmp_path / "model")
    adapter = adapter_cls.from_pretrained(str(tmp_path / "model"), num_steps=2)
    assert type(adapter.pipeline).__name__ == adapter_cls.pipeline_class
    assert adapter.num_steps == 2 and adapter.latent_shape[0] == 4


@pytest.mark.parametrize("adapter_cls", [StableDiffusionAdapter, StableDiffusionXLAdapter, LCMAdapter])
def test_missing_model_offline_gives_clear_error(monkeypatch, adapter_cls):
    import huggingface_hub.constants as constants

    from das.adapters.loading import WeightsNotAvailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotAvailableError) as info:
        adapter_cls.from_pretrained("made-up-org/made-up-diffusion-model")
    message = str(info.value)
    assert "made-up-org/made-up-diffusion-model" in message and "local folder" in message
