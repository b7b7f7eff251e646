"""The opt-in precision and layout options: float32 weights under autocast, channels_last and the compile fallback."""

import pytest
import torch

from das.adapters import common
from das.adapters.stable_diffusion import StableDiffusionAdapter
from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings
from tests.tiny_components import tiny_sd_pipeline

PROMPTS = ["a cat", "a red dog"]
REWARD = FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")


def _adapter(**speed):
    return StableDiffusionAdapter(tiny_sd_pipeline(), num_steps=3, guidance_scale=5.0).set_speed_options(**speed)


def _sample(adapter, **kwargs):
    sampler = DASSampler(adapter, DASSettings(kl_coeff=0.01, num_particles=3, **kwargs))
    return sampler.sample(PROMPTS, REWARD, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference():
    return _sample(_adapter())


def _assert_same(result, reference):
    for name in ("samples", "images", "log_weights", "log_normalizer", "rewards", "selected_index"):
        assert torch.equal(getattr(result, name), getattr(reference, name)), name


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_keeps_particles_and_weights_in_float32(reference, dtype):
    result = _sample(_adapter(), autocast=dtype)
    for name in ("samples", "images", "rewards", "log_weights", "log_normalizer"):
        assert getattr(result, name).dtype == torch.float32, name
    assert torch.isfinite(result.log_weights).all() and torch.isfinite(result.log_normalizer).all()
    assert torch.allclose(result.log_normalizer, reference.log_normalizer, rtol=1e-2)


def test_options_off_are_the_default_bit_for_bit(reference):
    _assert_same(_sample(_adapter(channels_last=False, compile_unet=False), autocast=None), reference)


def test_channels_last_stays_within_float32_rounding(reference):
    result = _sample(_adapter(channels_last=True))
    torch.testing.assert_close(result.images, reference.images, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.log_normalizer, reference.log_normalizer, atol=0, rtol=1e-5)


def test_a_failing_compile_warns_once_and_runs_eagerly(monkeypatch, reference):
    def broken(module):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nmore detail")

        return call

    monkeypatch.setattr(common.torch, "compile", broken)
    adapter = _adapter(compile_unet=True)
    assert adapter.unet.config is adapter.unet.eager.config  # attributes read the eager module
    with pytest.warns(
        RuntimeWarning, match=r"torch.compile of .* failed \(RuntimeError: no C\+\+ compiler\)"
    ) as caught:
        result = _sample(adapter)
    assert sum("torch.compile" in str(w.message) for w in caught) == 1
    _assert_same(result, reference)


def test_bad_autocast_fails_with_a_clear_message():
    with pytest.raises(ValueError, match="Unknown autocast 'fp8'; choose one of: bf16, fp16 or None"):
        DASSettings(kl_coeff=0.01, autocast="fp8")


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("smc", "autocast", "fp8", "Unknown smc.autocast"),
        ("model", "channels_last", 1, "model.channels_last must be True or False"),
        ("model", "compile_unet", "yes", "model.compile_unet must be True or False"),
    ],
)
def test_config_checks_the_speed_fields(section, field, value, message):
    from config.sd import base
    from dasapp.config_checks import ConfigError, check_shared_sections

    config = base()
    config.device = "cpu"
    check_shared_sections(config)
    with config[section].unlocked():  # the declared field is typed: replace it to hand the check a wrong type
        del config[section][field]
        config[section][field] = value
    with pytest.raises(ConfigError, match=message):
        check_shared_sections(config)


def test_factory_passes_autocast_and_leaves_it_off_by_default():
    from config.sd import base
    from dasapp.factory import settings_from_config

    smc = base().smc
    assert smc.autocast == "" and settings_from_config(smc).autocast is None
    smc.autocast = "bf16"
    assert settings_from_config(smc).autocast == "bf16"
    del smc.autocast  # a section without the field (built by hand): off
    assert settings_from_config(smc).autocast is None
