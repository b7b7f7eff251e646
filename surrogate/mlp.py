"""A batch of M independent MLPs with stacked weights, and its early-stopped Adam fit.

One module serves both the single MLP of the UCB surrogate (``num_heads=1``) and the
bootstrap ensemble (``num_heads=M``): weights are stacked as `(M, in, out)` and every layer
is one ``torch.baddbmm``, so M heads train in one vectorized pass, not a Python loop.

The fit follows the fixes to the reference trainer: the train/validation split is a
*shuffled* permutation drawn from the generator (the newest points are not always held
out), mini-batch Adam runs until the validation loss has not improved for ``patience``
epochs or ``max_epochs`` is reached, and the best epoch's weights are *copied*
(``clone()``), not referenced, and restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# Reference head for 768-d CLIP features: 768 -> 1024 -> 128 -> 64 -> 16 -> 1.
DEFAULT_HIDDEN: tuple[int, ...] = (1024, 128, 64, 16)


class BatchedMLP(nn.Module):
    """M independent MLPs `D -> hidden... -> 1` with ReLU and dropout, weights `(M, in, out)`.

    Args:
        input_dim: Input dimension `D`.
        hidden: Hidden widths; the last one is the feature layer `φ` used by the UCB bonus.
        num_heads: Number of independent networks `M`.
        dropout: Dropout probability after each hidden activation (training only).
        generator: Generator for the initialization (PyTorch ``nn.Linear`` scheme).
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        num_heads: int = 1,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.sizes = [int(input_dim), *[int(h) for h in hidden], 1]
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            self.weights.append(nn.Parameter(torch.empty(self.num_heads, fan_in, fan_out, dtype=dtype)))
            self.biases.append(nn.Parameter(torch.empty(self.num_heads, 1, fan_out, dtype=dtype)))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) init, as ``nn.Linear`` does."""
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])
            for p in (w, b):
                u = torch.rand(p.shape, generator=generator, dtype=p.dtype)
                p.copy_((2 * u - 1) * bound)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # shared inputs (B, D) -> (M, B, D) without copying
            return x.unsqueeze(0).expand(self.num_heads, -1, -1)
        if x.ndim != 3 or x.shape[0] != self.num_heads:
            raise ValueError(f"Expected inputs (B, D) or ({self.num_heads}, B, D), got {tuple(x.shape)}.")
        return x

    def features(self, x: torch.Tensor, dropout_generator: torch.Generator | None = None) -> torch.Tensor:
        """Last hidden layer `φ`: `(B, D)` or `(M, B, D)` -> `(M, B, hidden[-1])`.

        Dropout is applied only when ``dropout_generator`` is given (training).
        """
        h = self._expand(x)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = torch.relu(torch.baddbmm(b, h, w))
            if dropout_generator is not None and self.dropout > 0:
                keep = torch.rand(h.shape, generator=dropout_generator, device=h.device, dtype=h.dtype) >= self.dropout
                h = h * keep / (1.0 - self.dropout)
        return h

    def head(self, phi: torch.Tensor) -> torch.Tensor:
        """Output layer: `φ (M, B, H) -> (M, B)`."""
        return torch.baddbmm(self.biases[-1], phi, self.weights[-1]).squeeze(-1)

    def forward(self, x: torch.Tensor, dropout_generator: torch.Generator | None = None) -> torch.Tensor:
        """`(B, D)` or `(M, B, D)` -> predictions `(M, B)`."""
        return self.head(self.features(x, dropout_generator))


def fit_batched_mlp(
    net: BatchedMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    train_index: torch.Tensor,
    val_index: torch.Tensor,
    *,
    generator: torch.Generator,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    max_epochs: int = 200,
    patience: int = 10,
    min_delta: float = 1e-4,
) -> dict[str, Any]:
    """Fit every head of ``net`` by mini-batch Adam on its own rows, early-stopped per head.

    Args:
        net: The batched MLP (modified in place; ends holding each head's best weights).
        x: Standardized features `(N, D)`.
        y: Standardized rewards `(N,)`.
        train_index: Row indices each head trains on, `(M, n_train)` (bootstrap resamples
            may repeat rows).
        val_index: Shared validation rows `(n_val,)`.
        generator: CPU generator for shuffling and dropout (a device generator is derived).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size per head.
        max_epochs: Epoch cap.
        patience: Stop a head after this many epochs without a validation improvement
            larger than ``min_delta``; the loop ends when all heads have stopped.
        min_delta: Minimum decrease of the validation MSE that counts as an improvement.

    Returns:
        Statistics: ``epochs``, ``best_epoch`` `(M,)` list, ``best_val_mse`` list, ``seconds``.
    """
    start = time.perf_counter()
    device = x.device
    num_heads, n_train = train_index.shape
    dev_gen = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    params = list(net.parameters())
    best_state = [p.detach().clone() for p in params]
    best_loss = torch.full((num_heads,), float("inf"), dtype=x.dtype, device=device)
    best_epoch = torch.zeros(num_heads, dtype=torch.long, device=device)
    bad = torch.zeros(num_heads, dtype=torch.long, device=device)
    x_val, y_val = x[val_index], y[val_index]
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = torch.argsort(torch.rand(num_heads, n_train, generator=generator), dim=1).to(device)
        order = torch.gather(train_index, 1, order)
        for s in range(0, n_train, batch_size):
            rows = order[:, s : s + batch_size]  # (M, b)
            pred = net(x[rows], dropout_generator=dev_gen)  # (M, b)
            loss = ((pred - y[rows]) ** 2).mean(dim=1).sum()  # heads are independent
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val_loss = ((net(x_val) - y_val) ** 2).mean(dim=1)  # (M,)
            improved = val_loss < best_loss - min_delta
            for p, b in zip(params, best_state):
                mask = improved.view(-1, *([1] * (p.ndim - 1)))
                b.copy_(torch.where(mask, p.detach(), b))  # a copy, never a reference
            best_loss = torch.where(improved, val_loss, best_loss)
            best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
            bad = torch.where(improved, torch.zeros_like(bad), bad + 1)
        if bool((bad >= patience).all()):
            break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    net.eval()
    return {
        "epochs": epoch,
        "best_epoch": best_epoch.tolist(),
        "best_val_mse": best_loss.tolist(),
        "seconds": time.perf_counter() - start,
    }


def split_indices(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled train/validation split of `range(n)`.

    Returns `(train (n - n_val,), val (n_val,))`. With fewer than 10 points (or
    ``val_fraction == 0``) there is no held-out set and validation uses all points.
    """
    perm = torch.randperm(n, generator=generator)
    n_val = int(round(val_fraction * n))
    if n < 10 or n_val < 1:
        return perm, perm
    return perm[n_val:], perm[:n_val]


def mlp_expected_tensors(surrogate) -> dict:
    """The checkpoint tensors every MLP surrogate saves: the network's parameters, the input
    and reward standardizers and the noise std, as ``{name: TensorInfo}`` (for the check of a
    checkpoint's tensor table before loading)."""
    from surrogate.checkpoint import tensor_info

    expected = {f"net.{k}": tensor_info(v.dtype, v.shape) for k, v in surrogate.net.state_dict().items()}
    expected.update(surrogate.x_norm.expected_state("x_norm"))
    expected.update(surrogate.y_norm.expected_state("y_norm"))
    expected["noise_std"] = tensor_info(torch.float64, (1,))
    return expected


def check_mlp_loaded(surrogate, path: str) -> None:
    """The scales of a loaded MLP surrogate are positive (else ``SurrogateCheckpointError``)."""
    surrogate._require_positive(path, "x_norm.std", surrogate.x_norm.std)
    surrogate._require_positive(path, "y_norm.std", surrogate.y_norm.std)
    surrogate._require_positive(path, "noise_std", torch.tensor([surrogate.noise_std]))
