"""Loading the shipped world model through the same adapter as every pixel-space model."""

from __future__ import annotations

import os

import torch

from world import DEFAULT_ETA, DEFAULT_GUIDANCE_SCALE, DEFAULT_MODEL_PATH, DEFAULT_NUM_STEPS


def load_adapter(
    path: str | os.PathLike | None = None,
    num_steps: int = DEFAULT_NUM_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    eta: float = DEFAULT_ETA,
    device: str | torch.device = "cpu",
):
    """``PixelUNetAdapter.from_pretrained`` on the world model with the world's default settings.

    Nothing here is special to the world: it is the adapter any pixel-space model folder
    loads through, with this world's defaults filled in.
    """
    from das.adapters.pixel import PixelUNetAdapter

    return PixelUNetAdapter.from_pretrained(
        path or DEFAULT_MODEL_PATH, num_steps=num_steps, guidance_scale=guidance_scale, eta=eta, device=device
    )
