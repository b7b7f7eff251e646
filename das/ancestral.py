"""Plain ancestral sampling through any :class:`DenoiserAdapter` (no reward, no SMC)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from das.adapters.base import DenoiserAdapter


@torch.no_grad()
def sample_images(
    adapter: DenoiserAdapter, prompts: Sequence[str], generator: torch.Generator, batch_size: int = 64
) -> torch.Tensor:
    """Samples one image per prompt from the pretrained chain, `(len(prompts), C, H, W)` in [0, 1].

    Steps ``x_{t-1} = mean + std · z`` through ``adapter.transition``, exactly the chain the
    SMC sampler proposes from when the reward has no gradient.

    Args:
        adapter: any denoiser adapter (e.g. ``PixelUNetAdapter``).
        prompts: one prompt per image (repeat a prompt to get several images of it).
        generator: source of the initial and step noise.
        batch_size: rows per model call.
    """
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        cond = adapter.encode_prompts(chunk)
        x = adapter.initial_noise(len(chunk), generator)
        for step in range(adapter.num_steps):
            tr = adapter.transition(x, step, cond)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = tr.mean + tr.std * noise
        out.append(adapter.decode(x))
    return torch.cat(out)
