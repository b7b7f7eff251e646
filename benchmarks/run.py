"""Runs every benchmark in turn, or the ones named: ``python -m benchmarks.run [NAME ...]`` (``make bench``).

Each benchmark rewrites its file under ``benchmarks/results/``; ``--help`` lists them and runs nothing.
A benchmark runs with its own defaults (its command-line options: ``python -m benchmarks.bench_<name> --help``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

#: Every benchmark in benchmarks/, in the order ``make bench`` runs them, with what it measures.
BENCHMARKS = {
    "bench_smc_overhead": "SMC bookkeeping overhead on the toy adapter",
    "bench_das_sd": "DAS against its autograd floor on SD-proportioned tiny components",
    "bench_precision": "DAS's opt-in precision and layout options against float32 eager",
    "bench_reward_per_second": "reward per second, the test-time-scaling curve",
    "bench_surrogate": "surrogates: fit times, UCB bonus throughput, GP scaling, calibration",
    "bench_gp": "the sparse GP on every point against the exact GP on a subset",
    "bench_world": "the embedded world: plain sampling and DAS on the shipped 32x32 model",
    "bench_realign": "DeRaDiff realignment on the exact toys, and its cost per sample",
    "bench_online": "the online loop's methods on the embedded world, paired over seeds (the longest)",
}
MODULES = tuple(BENCHMARKS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"benchmarks.run: {message}; see --help.\n")


def _parser() -> _Parser:
    listing = "\n".join(f"  {name:<26}{what}" for name, what in BENCHMARKS.items())
    return _Parser(
        prog="python -m benchmarks.run",
        description="Runs the benchmarks (all of them by default); each rewrites its file in benchmarks/results/.",
        epilog=f"benchmarks, in the order they run:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_benchmark(name: str) -> int:
    """Runs ``benchmarks.<name>`` with its default options and returns its exit status (0 when it returns None)."""
    module = importlib.import_module(f"benchmarks.{name}")
    saved = sys.argv
    sys.argv = [f"benchmarks.{name}"]  # the benchmarks that read sys.argv see no options of this command
    try:
        status = module.main()
    finally:
        sys.argv = saved
    return int(status or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` (without the program name), runs the chosen benchmarks and returns the exit status."""
    parser = _parser()
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all, listed below)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        print(
            f"benchmarks.run: unknown benchmark {unknown[0]!r}; choose from: {', '.join(BENCHMARKS)}.", file=sys.stderr
        )
        return 2
    failed = []
    for name in args.names or MODULES:
        print(f"== benchmarks.{name}", flush=True)
        if run_benchmark(name) != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks.run: {', '.join(failed)} exited with an error.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
