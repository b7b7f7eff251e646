"""A frozen, deterministic, differentiable featurizer for the embedded world's images.

:class:`WorldFeaturizer` maps images `(N, 3, H, W)` in [0, 1] to `(N, 128)` features,
built from four blocks, each a smooth function of the pixels:

- colour statistics (10): per-channel mean and std, and mean and std of the opponent
  channels ``rg = R − G`` and ``yb = ½(R + G) − B`` (what colourfulness is made of);
- texture energy (6): per-channel root-mean-square of horizontal and vertical finite
  differences (what JPEG size mostly depends on);
- a fixed random two-layer conv network (64): conv 5×5 stride 2 (3→32), tanh, conv 3×3
  stride 2 (32→32), tanh, then the spatial mean and root-mean-square of each channel;
  weights drawn from a seeded ``torch.Generator`` (no training, no shipped weights);
- a coarse layout (48): RGB averaged over a 4×4 grid (where the shape is and its colour).

Nothing trains: parameters are buffers, so gradients flow only to the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class WorldFeaturizer(torch.nn.Module):
    """Images `(N, 3, H, W)` in [0, 1] -> features `(N, 128)`; frozen and differentiable.

    Args:
        seed: seed of the random conv weights (same seed, same features).
        channels: conv channels (``dim = 10 + 6 + 2 * channels + 48``).
    """

    def __init__(self, seed: int = 0, channels: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(channels, 3, 5, 5, generator=g) * (2.0 / (3 * 25)) ** 0.5
        w2 = torch.randn(channels, channels, 3, 3, generator=g) * (1.0 / (channels * 9)) ** 0.5
        self.register_buffer("w1", w1)
        self.register_buffer("b1", torch.randn(channels, generator=g) * 0.1)
        self.register_buffer("w2", w2)
        self.seed = seed
        self.dim = 10 + 6 + 2 * channels + 48

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"WorldFeaturizer needs RGB images (N, 3, H, W), got {tuple(images.shape)}.")
        x = images.to(self.w1.dtype)
        eps = 1e-6
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        opp = torch.stack([r - g, 0.5 * (r + g) - b], 1)
        colour = torch.cat(
            [
                x.mean((2, 3)),
                (x.var((2, 3), unbiased=False) + eps).sqrt(),
                opp.mean((2, 3)),
                (opp.var((2, 3), unbiased=False) + eps).sqrt(),
            ],
            1,
        )
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
        texture = torch.cat([(dx.pow(2).mean((2, 3)) + eps).sqrt(), (dy.pow(2).mean((2, 3)) + eps).sqrt()], 1)
        h = torch.tanh(F.conv2d(x * 2 - 1, self.w1, self.b1, stride=2, padding=2))
        h = torch.tanh(F.conv2d(h, self.w2, stride=2, padding=1))
        conv = torch.cat([h.mean((2, 3)), (h.pow(2).mean((2, 3)) + eps).sqrt()], 1)
        layout = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([colour, texture, conv, layout], 1)
