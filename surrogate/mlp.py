"""A batch of M independent MLPs with stacked weights, and its early-stopped Adam fit.

One module serves both the single MLP of the UCB surrogate (``num_heads=1``) and the
bootstrap ensemble (``num_heads=M``): weights are stacked as `(M, in, out)` and every layer
is one ``torch.baddbmm``, so M heads train in one vectorized pass, not a Python loop.

:class:`MLPSurrogate` is the base of the two MLP kinds (:mod:`surrogate.ucb`,
:mod:`surrogate.bootstrap`): the network, its standardizers, the fit (standardize, initialize,
split, train, calibrate) and the checkpoint tensors; a kind chooses each head's training rows
and calibrates its std.

The fit follows the fixes to the reference trainer: the train/validation split is a
*shuffled* permutation drawn from the generator (the newest points are not always held
out), mini-batch Adam runs until the validation loss has not improved for ``patience``
epochs or ``max_epochs`` is reached, and the best epoch's weights are *copied*
(``clone()``), not referenced, and restored at the end.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from surrogate.base import Standardizer, Surrogate, draw_seed
from surrogate.calibration import heldout_variance_split
from surrogate.checkpoint import TensorInfo, tensor_info
from surrogate.hyperparameters import int_list, integer, number

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


class _BestHeads:
    """Early-stopping record of every head: its best validation MSE, epoch and a copy of its weights."""

    def __init__(self, net: BatchedMLP, dtype: torch.dtype, device: torch.device) -> None:
        num_heads = net.num_heads
        self.params = list(net.parameters())
        self.state = [p.detach().clone() for p in self.params]
        self.loss = torch.full((num_heads,), float("inf"), dtype=dtype, device=device)
        self.epoch = torch.zeros(num_heads, dtype=torch.long, device=device)
        self.bad = torch.zeros(num_heads, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, val_loss: torch.Tensor, epoch: int, min_delta: float) -> None:
        """Keep a copy of each head whose validation MSE `(M,)` improved by more than ``min_delta``."""
        improved = val_loss < self.loss - min_delta
        for p, b in zip(self.params, self.state):
            mask = improved.view(-1, *([1] * (p.ndim - 1)))
            b.copy_(torch.where(mask, p.detach(), b))  # a copy, never a reference
        self.loss = torch.where(improved, val_loss, self.loss)
        self.epoch = torch.where(improved, torch.full_like(self.epoch, epoch), self.epoch)
        self.bad = torch.where(improved, torch.zeros_like(self.bad), self.bad + 1)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy every head's best weights back into the network."""
        for p, b in zip(self.params, self.state):
            p.copy_(b)


def _train_epoch(
    net: BatchedMLP,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    train_index: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    dropout_generator: torch.Generator,
) -> None:
    """One pass of mini-batch Adam, each head over its own rows `train_index (M, n_train)` in a fresh order."""
    num_heads, n_train = train_index.shape
    net.train()
    order = torch.argsort(torch.rand(num_heads, n_train, generator=generator), dim=1).to(x.device)
    order = torch.gather(train_index, 1, order)
    for s in range(0, n_train, batch_size):
        rows = order[:, s : s + batch_size]  # (M, b)
        pred = net(x[rows], dropout_generator=dropout_generator)  # (M, b)
        loss = ((pred - y[rows]) ** 2).mean(dim=1).sum()  # heads are independent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()


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
    dropout_generator = torch.Generator(device=x.device).manual_seed(draw_seed(generator))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best = _BestHeads(net, x.dtype, x.device)
    x_val, y_val = x[val_index], y[val_index]
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        _train_epoch(net, opt, x, y, train_index, batch_size, generator, dropout_generator)
        with torch.no_grad():
            best.update(((net(x_val) - y_val) ** 2).mean(dim=1), epoch, min_delta)  # (M,) validation MSE
        if bool((best.bad >= patience).all()):
            break
    best.restore()
    net.eval()
    return {
        "epochs": epoch,
        "best_epoch": best.epoch.tolist(),
        "best_val_mse": best.loss.tolist(),
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


#: The constructor arguments every MLP kind passes on to :class:`MLPSurrogate` unchanged.
MLP_ARGUMENTS = (
    "input_dim",
    "hidden",
    "dropout",
    "lr",
    "weight_decay",
    "batch_size",
    "max_epochs",
    "patience",
    "val_fraction",
    "label_noise_std",
    "dtype",
)


def mlp_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`MLP_ARGUMENTS` among a kind's constructor arguments (its ``locals()``)."""
    return {name: arguments[name] for name in MLP_ARGUMENTS}


class MLPSurrogate(Surrogate):
    """Base of the MLP kinds: `M` stacked MLP heads on standardized inputs and rewards.

    It owns the network, the input and reward standardizers and the label-noise std (all in
    the checkpoint), and the fit: fresh standardization and initialization (unless warm), a
    shuffled train/validation split, early-stopped Adam (:func:`fit_batched_mlp`) and the
    calibration of the std on the validation rows. A kind chooses the rows each head trains
    on (:meth:`_train_rows`) and calibrates its std (:meth:`_calibrate`).

    Args:
        input_dim: Feature dimension `D`.
        num_heads: Number of heads `M`.
        hidden: Hidden widths of every head; the last is `φ`.
        dropout: Dropout probability during training.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Mini-batch size per head.
        max_epochs: Epoch cap.
        patience: Early-stopping patience in epochs (per head).
        val_fraction: Shuffled held-out fraction, shared by the heads (see :func:`split_indices`).
        label_noise_std: The known label-noise std in reward units, or ``None`` (unknown).
        dtype: ``"float32"`` or ``"float64"``.
    """

    hyperparameter_specs = {
        **Surrogate.hyperparameter_specs,
        "hidden": int_list(1, 16384, max_length=64),
        "dropout": number(0.0, 1.0, high_open=True),
        "lr": number(0.0, low_open=True),
        "weight_decay": number(0.0),
        "batch_size": integer(1, 2**16),
        "max_epochs": integer(1, 100_000),
        "patience": integer(1, 100_000),
        "val_fraction": number(0.0, 0.9),  # above 0.9 a 10-point split can leave no training row
        "label_noise_std": number(0.0, optional=True),  # known label-noise std (None: unknown), reward units
    }
    _standardizers = ("x_norm", "y_norm")
    _scalars = {"noise_std": "noise_std"}
    _movable = ("net",)

    @classmethod
    def implied_elements(cls, values: Mapping[str, Any]) -> tuple[str, int, str]:
        """The parameter count of the `input_dim -> hidden... -> 1` network times ``num_heads`` (1 if none)."""
        input_dim, heads = int(values["input_dim"]), int(values.get("num_heads", 1))
        sizes = [input_dim, *[int(h) for h in values["hidden"]], 1]
        count = heads * sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
        return "hidden", count, f"input_dim={input_dim} and {heads} head(s)"

    def __init__(
        self,
        input_dim: int,
        *,
        num_heads: int,
        hidden: Sequence[int],
        dropout: float,
        lr: float,
        weight_decay: float,
        batch_size: int,
        max_epochs: int,
        patience: int,
        val_fraction: float,
        label_noise_std: float | None,
        dtype: str | torch.dtype,
    ) -> None:
        super().__init__(input_dim, dtype)
        self.label_noise_std = None if label_noise_std is None else float(label_noise_std)
        self.train_kwargs = dict(
            lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience
        )
        self.val_fraction = float(val_fraction)
        self.net = BatchedMLP(
            input_dim,
            hidden,
            num_heads=num_heads,
            dropout=dropout,
            generator=torch.Generator().manual_seed(0),
            dtype=self.dtype,
        )
        self.net.eval()
        self.x_norm = Standardizer(input_dim, self.dtype)
        self.y_norm = Standardizer(1, self.dtype)
        self.noise_std = 1.0

    def _fit(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, warm: bool) -> dict[str, Any]:
        """Standardize and initialize (unless ``warm``), split, train every head, then calibrate.

        ``generator`` draws, in this order: the initialization, the split, the kind's training
        rows, the device generator's seed, and every epoch's shuffles. A warm start keeps the
        current weights and standardization.
        """
        if not warm:
            self.x_norm = Standardizer(self.input_dim, self.dtype).fit(x)
            self.y_norm = Standardizer(1, self.dtype).fit(y)
            self.net.reset_parameters(generator)
        self._move(x.device)
        xz, yz = self.x_norm.transform(x), self.y_norm.transform(y.unsqueeze(-1)).squeeze(-1)
        train, val = split_indices(x.shape[0], self.val_fraction, generator)
        train_index, val = self._train_rows(train, generator).to(x.device), val.to(x.device)
        info = fit_batched_mlp(self.net, xz, yz, train_index, val, generator=generator, **self.train_kwargs)
        calibration = self._calibrate(xz, yz, val, heldout=val.numel() < x.shape[0])
        return {**info, "noise_std": self.noise_std, "calibration": calibration}

    def _train_rows(self, train: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The rows each head trains on, `(M, n_train)`, from the training split `(n_train,)`."""
        return train.unsqueeze(0)

    @abstractmethod
    def _calibrate(self, xz: torch.Tensor, yz: torch.Tensor, val: torch.Tensor, heldout: bool) -> dict[str, Any]:
        """Set ``noise_std`` and the kind's std scales from the validation rows; return the record.

        Args:
            xz: Standardized features `(N, D)`.
            yz: Standardized rewards `(N,)` (their variance is the prior error variance).
            val: Validation rows `(n_val,)` (every row when there is no held-out split).
            heldout: Whether ``val`` is a genuine held-out split (False below 10 points).

        Returns:
            The calibration record kept in ``fit_info["calibration"]``.
        """

    def _noise_split(self, residuals: torch.Tensor, yz: torch.Tensor, heldout: bool) -> dict[str, Any]:
        """Split the validation error (standardized ``residuals (n_val,)``) and set ``noise_std`` from it.

        Calls :func:`heldout_variance_split` with the reward variance as the prior (no rows when
        the split is not held out) and the known label noise in standardized units.
        """
        y_scale = float(self.y_norm.std[0])
        noise_var = None if self.label_noise_std is None else (self.label_noise_std / y_scale) ** 2
        split = heldout_variance_split(
            residuals if heldout else residuals[:0], prior_var=float(yz.var(correction=0)), noise_var=noise_var
        )
        self.noise_std = math.sqrt(split["noise_var"]) * y_scale
        return split

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def _expected_model_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        return {f"net.{k}": tensor_info(v.dtype, v.shape) for k, v in self.net.state_dict().items()}

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()
