"""Adapters over the tiny random components of :mod:`tests.tiny_components`, shared by the adapter tests."""

import torch

from das.adapters.pixel import PixelUNetAdapter
from tests.tiny_components import ddim_scheduler, tiny_cond_unet, tiny_text_encoder, tiny_tokenizer


def pixel_adapter(seed=0, guidance=2.0, num_steps=3, scheduler=None):
    """A conditional pixel-space UNet adapter (3×8×8 images) with classifier-free guidance `guidance`."""
    return PixelUNetAdapter(
        tiny_cond_unet(seed, in_channels=3),
        scheduler or ddim_scheduler(),
        tiny_text_encoder(seed),
        tiny_tokenizer(),
        num_steps=num_steps,
        guidance_scale=guidance,
    )


def assert_transition_is_the_ddim_step(adapter, cond, x, step, doubled_output, guidance, reference, eta, generator):
    """The adapter's transition at `x` equals ``reference.step`` on the guided noise, with a known noise.

    Args:
        doubled_output: the UNet's output on the ``[uncond; cond]`` batch at step `step`'s timestep.
        reference: a DDIM scheduler after ``set_timesteps``, stepping like the adapter's.
        generator: draws the variance noise.

    Returns:
        The adapter's transition.
    """
    uncond, text = doubled_output.chunk(2)
    eps = uncond + guidance * (text - uncond)
    noise = torch.randn(x.shape, generator=generator)
    expected = reference.step(eps, reference.timesteps[step], x, eta=eta, variance_noise=noise)
    tr = adapter.transition(x, step, cond)
    torch.testing.assert_close(tr.x0_hat, expected.pred_original_sample)
    torch.testing.assert_close(tr.mean + tr.std * noise, expected.prev_sample)
    return tr
