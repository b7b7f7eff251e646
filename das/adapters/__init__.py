"""Denoiser adapters: one per model family, all behind :class:`DenoiserAdapter`."""

from das.adapters.base import Conditioning, DenoiserAdapter, Transition

__all__ = ["Conditioning", "DenoiserAdapter", "Transition"]
