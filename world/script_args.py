"""Command-line pieces the world's training scripts share (``world/train.py``, ``world/align.py``)."""

from __future__ import annotations

import argparse

import torch


def add_optimisation_arguments(
    p: argparse.ArgumentParser,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    ema_decay: float,
    steps_help: str | None = None,
) -> None:
    """The fine-tuning options: steps, batch size, learning rate and warm-up, caption dropout, EMA."""
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--p-uncond", type=float, default=0.15, help="probability of the empty caption")
    p.add_argument("--ema-decay", type=float, default=ema_decay)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How a run reports and repeats: log interval, seed, torch threads."""
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")


def setup_torch(args: argparse.Namespace) -> None:
    """Applies ``--threads`` (0: torch's default) and seeds torch with ``--seed``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
