"""Denoiser adapters: one per model family, all behind :class:`DenoiserAdapter`.

The diffusers-backed adapters are imported lazily (``from das.adapters import
StableDiffusionAdapter`` works, but importing :mod:`das.adapters` alone stays light).
"""

from das.adapters.base import Conditioning, DenoiserAdapter, ModelOutputAdapter, Transition
from das.adapters.loading import WeightsNotAvailableError

_LAZY = {
    "PixelUNetAdapter": "das.adapters.pixel",
    "StableDiffusionAdapter": "das.adapters.stable_diffusion",
    "StableDiffusionXLAdapter": "das.adapters.stable_diffusion",
    "LCMAdapter": "das.adapters.lcm",
    "DiffusersAdapter": "das.adapters.common",
    "ToyAdapter": "das.toy.adapter",
    "RealignedAdapter": "das.adapters.realigned",
}

__all__ = ["Conditioning", "DenoiserAdapter", "ModelOutputAdapter", "Transition", "WeightsNotAvailableError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'das.adapters' has no attribute {name!r}")
