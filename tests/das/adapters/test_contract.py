"""The :class:`~das.adapters.base.DenoiserAdapter` contract, one test class that every adapter goes through.

In the spirit of diffusers' ``SchedulerCommonTest``: :class:`AdapterContract` holds the
checks, and each ``Test<Adapter>`` subclass only says how to build its adapter (from the
tiny random components of :mod:`tests.tiny_components`) and what shapes to expect.
"""

import pytest
import torch

from das import DASSampler, DASSettings
from das.adapters.base import DenoiserAdapter, ModelOutputAdapter
from das.adapters.lcm import LCMAdapter
from das.adapters.realigned import RealignedAdapter
from das.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
from das.rewards import FunctionReward
from das.toy import nine_gaussians, paper_toy_reward
from das.toy.adapter import ToyAdapter
from tests.das.adapters.adapter_builders import pixel_adapter
from tests.tiny_components import (
    tiny_lcm_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

PROMPTS = ["a cat", "a red dog"]


def _brightness():
    return FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")


def _rows(cond, k):
    """Conditioning of ``B`` prompts with every row repeated `k` times, as the SMC core builds it."""
    return {key: value.repeat_interleave(k, dim=0) for key, value in cond.items()}


class AdapterContract:
    """What every adapter promises the SMC core; subclasses set the class attributes below."""

    num_steps: int  # the chain length the adapter is built with
    event_shape: tuple[int, ...]  # one particle
    image_shape: tuple[int, ...] | None  # one decoded image, or None for vector models (identity decode)
    dtype = torch.float32

    @staticmethod
    def build():
        """The adapter under test."""
        raise NotImplementedError

    def reward(self):
        """A differentiable reward of the decoded particles, for the end-to-end check."""
        return _brightness()

    def expected_x0_hat(self, adapter, model_output, step, x):
        """Tweedie's ``x̂0`` from an ε-prediction: ``(x − √(1 − ᾱ_t) ε) / √ᾱ_t`` with the scheduler's ``ᾱ_t``."""
        abar = adapter.scheduler.alphas_cumprod[adapter.timesteps[step]].to(x.dtype)
        return (x - (1 - abar).sqrt() * model_output) / abar.sqrt()

    @pytest.fixture(scope="class")
    def adapter(self):
        return self.build()

    @pytest.fixture(scope="class")
    def cond(self, adapter):
        return adapter.encode_prompts(PROMPTS)

    @pytest.fixture(scope="class")
    def x(self, adapter):
        return adapter.initial_noise(len(PROMPTS), torch.Generator().manual_seed(0))

    # ------------------------------------------------------------------ protocol
    def test_satisfies_the_protocols(self, adapter):
        assert isinstance(adapter, DenoiserAdapter) and isinstance(adapter, ModelOutputAdapter)
        assert adapter.num_steps == self.num_steps
        assert isinstance(adapter.device, torch.device) and adapter.device.type == "cpu"
        assert adapter.prediction_type in ("epsilon", "v_prediction", "sample")

    def test_encode_prompts_gives_one_row_per_prompt(self, adapter, cond):
        assert isinstance(cond, dict)
        for key, value in cond.items():
            assert isinstance(value, torch.Tensor) and value.shape[0] == len(PROMPTS), key
            assert value.device == adapter.device and torch.isfinite(value).all(), key

    def test_initial_noise_shape_dtype_and_determinism(self, adapter):
        x = adapter.initial_noise(3, torch.Generator().manual_seed(1))
        assert x.shape == (3, *self.event_shape) and x.dtype == self.dtype and x.device == adapter.device
        assert tuple(getattr(adapter, "latent_shape", self.event_shape)) == self.event_shape
        assert torch.isfinite(x).all()
        assert torch.equal(x, adapter.initial_noise(3, torch.Generator().manual_seed(1)))
        assert not torch.equal(x, adapter.initial_noise(3, torch.Generator().manual_seed(2)))

    # ------------------------------------------------------------------ transition
    @pytest.mark.parametrize("where", ["first", "last"])
    def test_transition_shapes_and_finiteness(self, adapter, cond, x, where):
        step = 0 if where == "first" else self.num_steps - 1
        with torch.no_grad():
            tr = adapter.transition(x, step, cond)
        for name in ("x0_hat", "mean"):
            value = getattr(tr, name)
            assert value.shape == x.shape and value.dtype == x.dtype and torch.isfinite(value).all(), name
        assert torch.broadcast_shapes(tr.std.shape, x.shape) == x.shape
        assert torch.isfinite(tr.std).all() and (tr.std >= 0).all()

    def test_transition_is_deterministic(self, adapter, cond, x):
        with torch.no_grad():
            first, second = adapter.transition(x, 1, cond), adapter.transition(x, 1, cond)
        for name in ("x0_hat", "mean", "std"):
            assert torch.equal(getattr(first, name), getattr(second, name)), name

    def test_transition_is_model_output_then_step(self, adapter, cond, x):
        with torch.no_grad():
            split = adapter.transition_from_output(adapter.model_output(x, 1, cond), 1, x)
            whole = adapter.transition(x, 1, cond)
        for name in ("x0_hat", "mean", "std"):
            assert torch.equal(getattr(split, name), getattr(whole, name)), name

    def test_x0_hat_is_tweedies_estimate_of_the_model_output(self, adapter, cond, x):
        with torch.no_grad():
            output = adapter.model_output(x, 1, cond)
            tr = adapter.transition_from_output(output, 1, x)
        torch.testing.assert_close(tr.x0_hat, self.expected_x0_hat(adapter, output, 1, x), atol=1e-4, rtol=1e-4)

    def test_rows_are_independent(self, adapter, cond):
        """The SMC core slices rows into chunks: a row's transition may not depend on the others."""
        x = adapter.initial_noise(4, torch.Generator().manual_seed(3))
        rows = _rows(cond, 2)
        with torch.no_grad():
            whole = adapter.transition(x, 1, rows)
            part = adapter.transition(x[1:3], 1, {key: value[1:3] for key, value in rows.items()})
        torch.testing.assert_close(part.mean, whole.mean[1:3], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(part.x0_hat, whole.x0_hat[1:3], atol=1e-5, rtol=1e-5)

    def test_the_graph_reaches_x_t_through_x0_hat_and_decode(self, adapter, cond, x):
        x = x.clone().requires_grad_(True)
        decoded = adapter.decode(adapter.transition(x, 1, cond).x0_hat)
        (grad,) = torch.autograd.grad(decoded.float().sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    # ------------------------------------------------------------------ decode
    def test_decode_shape_and_range(self, adapter, cond, x):
        with torch.no_grad():
            x0 = adapter.transition(x, self.num_steps - 1, cond).mean
            images = adapter.decode(x0)
        if self.image_shape is None:
            assert torch.equal(images, x0)  # vector models: the identity
        else:
            assert images.shape == (len(PROMPTS), *self.image_shape) and images.is_floating_point()
            assert images.min() >= 0 and images.max() <= 1

    def test_runs_inside_das(self, adapter):
        result = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=2)).sample(
            PROMPTS, self.reward(), torch.Generator().manual_seed(0)
        )
        images = self.image_shape or self.event_shape
        assert result.samples.shape == (len(PROMPTS), 2, *self.event_shape)
        assert result.images.shape == (len(PROMPTS), 2, *images)
        assert torch.isfinite(result.rewards).all() and result.ess.shape == (self.num_steps + 1, len(PROMPTS))


class TestToyAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 4, (2,), None

    @staticmethod
    def build():
        return ToyAdapter(nine_gaussians(), num_steps=4)

    def reward(self):
        return paper_toy_reward()


class TestPixelUNetAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 3, (3, 8, 8), (3, 8, 8)

    @staticmethod
    def build():
        return pixel_adapter()


class TestStableDiffusionAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 3, (4, 8, 8), (3, 16, 16)

    @staticmethod
    def build():
        return StableDiffusionAdapter(tiny_sd_pipeline(), num_steps=3, guidance_scale=5.0)


class TestStableDiffusionXLAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 3, (4, 8, 8), (3, 16, 16)

    @staticmethod
    def build():
        return StableDiffusionXLAdapter(tiny_sdxl_pipeline(), num_steps=3, guidance_scale=5.0)


class TestLCMAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 3, (4, 8, 8), (3, 16, 16)

    @staticmethod
    def build():
        return LCMAdapter(tiny_lcm_pipeline(), num_steps=3)

    def expected_x0_hat(self, adapter, model_output, step, x):
        """LCM's consistency estimate: ``c_skip x + c_out x̂0_ε`` with the scheduler's boundary scalings."""
        timestep = adapter.scheduler.timesteps[step]
        c_skip, c_out = adapter.scheduler.get_scalings_for_boundary_condition_discrete(timestep)
        return c_skip * x + c_out * super().expected_x0_hat(adapter, model_output, step, x)


class TestRealignedAdapter(AdapterContract):
    num_steps, event_shape, image_shape = 3, (3, 8, 8), (3, 8, 8)

    @staticmethod
    def build():
        return RealignedAdapter(pixel_adapter(0), pixel_adapter(1, guidance=3.0), 0.7)
