"""Tiny data sets and small model settings shared by the surrogate tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch

D = 6
SMALL_MLP = dict(hidden=(32, 16, 8), dropout=0.0, max_epochs=30, patience=5, batch_size=32)


def toy_data(
    n: int = 80, d: int = D, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.05 * torch.randn(n, generator=g, dtype=dtype)
    return x, y


def small_kwargs(kind: str, dtype: str = "float32") -> dict:
    if kind == "ucb":
        return dict(input_dim=D, dtype=dtype, **SMALL_MLP)
    if kind == "bootstrap":
        return dict(input_dim=D, num_heads=3, dtype=dtype, **SMALL_MLP)
    if kind == "gp":
        return dict(input_dim=D, pca_dim=4, dtype=dtype)
    raise ValueError(kind)


# Edits of a checkpoint's (header, tensors) for the untrusted-checkpoint tests.
Mutation = Callable[[dict, dict], None]


def header_change(**changes) -> Mutation:
    """Set hyperparameters in the header."""

    def mutate(header: dict, tensors: dict) -> None:
        header["hyperparameters"].update(changes)

    return mutate


def tensor_change(name: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Mutation:
    """Replace tensor `name` by `fn(copy)`; None deletes it."""

    def mutate(header: dict, tensors: dict) -> None:
        value = fn(tensors[name].clone())
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value

    return mutate


def tensor_added(name: str, value: torch.Tensor) -> Mutation:
    """Add a tensor the kind does not expect."""

    def mutate(header: dict, tensors: dict) -> None:
        tensors[name] = value

    return mutate


def entry_set(index, value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """`t[index] = value` (for :func:`tensor_change`)."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        t[index] = value
        return t

    return fn


def outputs(model, queries: list[torch.Tensor]) -> list[torch.Tensor]:
    """Mean, std, a UCB score and its gradient for each query batch (to compare bit for bit)."""
    from surrogate import UCB

    out = []
    for q in queries:
        f = q.clone().requires_grad_(True)
        mean, std = model.posterior(f)
        optimistic = UCB(model, beta=1.5, clip=10.0)(f)
        (grad,) = torch.autograd.grad(optimistic.sum(), f)
        out += [mean.detach(), std.detach(), optimistic.detach(), grad]
    return out


def assert_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape and torch.equal(x, y), f"output {i} differs (max {float((x - y).abs().max())})"


def craft_checkpoint(source: Path, target: Path, mutate: Mutation) -> Path:
    """Rewrite our own good checkpoint ``source`` with ``mutate(header, tensors)`` applied."""
    from safetensors.torch import load_file

    from surrogate.checkpoint import read_header, save_checkpoint

    header = copy.deepcopy(read_header(source))
    tensors = load_file(str(source))
    mutate(header, tensors)
    return save_checkpoint(target, tensors, {k: v for k, v in header.items() if k not in ("format", "version")})
