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
        out.append(adapter.decode(sample_chain(adapter, prompts[start : start + batch_size], generator)))
    return torch.cat(out)


@torch.no_grad()
def sample_chain(adapter: DenoiserAdapter, prompts: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """The pretrained chain run once per prompt: `x_0` `(len(prompts), *event)` in the adapter's space.

    Draws ``x_T`` (:meth:`~DenoiserAdapter.initial_noise`), then ``x_{t-1} = mean + std · z`` at
    every step; the one routine behind every plain sample in the project.
    """
    rows = list(prompts)
    cond = adapter.encode_prompts(rows)
    x = adapter.initial_noise(len(rows), generator)
    for step in range(adapter.num_steps):
        move = adapter.transition(x, step, cond)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = move.mean + move.std * noise
    return x
