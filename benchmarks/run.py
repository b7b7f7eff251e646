"""Runs every benchmark in turn: ``python -m benchmarks.run`` (``make bench``)."""

from __future__ import annotations

import importlib

MODULES = (
    "bench_smc_overhead",
    "bench_das_sd",
    "bench_precision",
    "bench_reward_per_second",
    "bench_surrogate",
    "bench_world",
    "bench_realign",
)


def main() -> None:
    for name in MODULES:
        print(f"== benchmarks.{name}")
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
