"""Which method spends oracle queries best? The online loop on the embedded world, over seeds.

Run: ``.venv/bin/python -m benchmarks.bench_online`` -> ``benchmarks/results/online.json`` and
its report ``benchmarks/results/online_report/`` (report.html, figures, summary.md/csv).
The runs are ordinary run directories under ``--runs`` (default ``runs/bench_online``), so
``python -m online.analysis`` reads them too. A run that is already complete there is
reused, and an interrupted one is resumed, so a stopped benchmark continues where it was;
``--summarize-only`` runs nothing and rewrites the summary and report from the runs there,
keeping the timings recorded by the invocation that ran them.

Methods, all on the same query budget (``--rounds`` rounds: round 0 of pretrained samples,
then guided rounds of ``--queries-per-round``):

* ``ucb``, ``bootstrap``, ``gp``: DAS guided by the optimistic surrogate (mean + β·std);
* ``thompson``: DAS guided by one posterior draw of the bootstrap ensemble per sampler call;
* ``greedy``: DAS guided by the surrogate mean (no exploration bonus);
* ``non-adaptive`` (SEIKO's baseline): the whole budget but one batch spent on pretrained
  samples in round 0, one fit (the greedy surrogate), one DAS batch guided by it;
* ``pretrained``: pretrained samples every round (``smc.guidance=none``);
* ``ceiling``: DAS guided by the true oracle itself, without label noise
  (``smc.guidance=oracle``; gradient-free for JPEG), same K and α.

Each row of ``summary`` gives the final round's true reward (mean and standard error over
seeds) and ``gain_fraction_of_ceiling`` = (method − pretrained) / (ceiling − pretrained) on
those means. ``comparisons`` gives, per oracle, the best optimistic method's lead over greedy
and over non-adaptive in standard errors, ``sqrt(se_a² + se_b²)``.

Runs go to ``--workers`` processes with ``--threads`` torch threads each (2 × 1 on the
2-core machine), longest runs first; the settings are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORACLES = ("jpeg", "colorfulness", "rare")
METHODS = ("ucb", "bootstrap", "gp", "thompson", "greedy", "non-adaptive", "pretrained", "ceiling")
OPTIMISTIC = ("ucb", "bootstrap", "gp", "thompson")
# method -> (config file, extra overrides); the budget overrides are added per run
METHOD_CONFIGS = {
    "ucb": ("config/UCB_smc.py", []),
    "bootstrap": ("config/Bootstrap_smc.py", []),
    "gp": ("config/GP_smc.py", []),
    "thompson": ("config/Bootstrap_smc.py", ["--config.smc.guidance=thompson"]),
    "greedy": ("config/Greedy_smc.py", []),
    "non-adaptive": ("config/Greedy_smc.py", []),
    "pretrained": ("config/Greedy_smc.py", ["--config.smc.guidance=none"]),
    "ceiling": ("config/Greedy_smc.py", ["--config.smc.guidance=oracle"]),
}
METHOD_NAMES = {
    "ucb": "UCB",
    "bootstrap": "Bootstrap",
    "gp": "GP",
    "thompson": "Thompson",
    "greedy": "Greedy",
    "non-adaptive": "Non-adaptive",
    "pretrained": "Pretrained",
    "ceiling": "Ceiling",
}
# relative cost of a run, for ordering (guided rounds with gradients dominate)
COST = {
    "pretrained": 1,
    "non-adaptive": 2,
    "ceiling": 4,
    "greedy": 5,
    "ucb": 5,
    "gp": 5,
    "bootstrap": 5,
    "thompson": 5,
}


def run_argv(method: str, oracle: str, seed: int, args) -> list[str]:
    """The loop's command line for one run of the benchmark."""
    config_file, extra = METHOD_CONFIGS[method]
    rounds, initial = args.rounds, args.initial_queries
    if method == "non-adaptive":
        initial, rounds = initial + (args.rounds - 2) * args.queries_per_round, 2
    return [
        "online_main_smc.py",
        f"--config={REPO / config_file}:tiny_{oracle}",
        f"--config.run_name={oracle}-{method}-s{seed}",
        f"--config.method={METHOD_NAMES[method]}",
        f"--config.output_dir={args.runs}",
        f"--config.seed={seed}",
        f"--config.loop.num_rounds={rounds}",
        f"--config.loop.initial_queries={initial}",
        f"--config.loop.queries_per_round={args.queries_per_round}",
        f"--config.model.num_steps={args.steps}",
        f"--config.smc.num_particles={args.particles}",
        "--config.progress=False",
        "--config.report=False",
        *extra,
    ]


def _complete_rounds(run_dir: Path) -> int:
    return len(list(run_dir.glob("round_*/COMPLETE")))


def _one_run(argv: list[str], run_dir: str, rounds: int, threads: int) -> dict:
    """Worker: runs (or resumes, or reuses) one loop run in this process."""
    import contextlib
    import io

    import torch

    torch.set_num_threads(threads)
    os.chdir(REPO)  # the config files import config.online_base
    from online.online_main_smc import main

    path = Path(run_dir)
    if path.is_dir() and _complete_rounds(path) >= rounds:
        return {"run": path.name, "status": 0, "seconds": 0.0, "reused": True}
    if (path / "run.json").is_file():
        argv = [a for a in argv if not a.startswith("--config.output_dir=")] + [f"--config.resume_from={path}"]
    started = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = main(argv)
    return {
        "run": path.name,
        "status": status,
        "seconds": time.perf_counter() - started,
        "reused": False,
        "log_tail": log.getvalue()[-600:] if status else "",
    }


def run_all(args) -> list[dict]:
    jobs = []
    for oracle in args.oracles:
        for method in args.methods:
            for seed in range(args.seeds):
                argv = run_argv(method, oracle, seed, args)
                rounds = 2 if method == "non-adaptive" else args.rounds
                jobs.append((COST[method], argv, str(Path(args.runs) / f"{oracle}-{method}-s{seed}"), rounds))
    jobs.sort(key=lambda job: -job[0])
    results = []
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_one_run, argv, run_dir, rounds, args.threads) for _, argv, run_dir, rounds in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
            result = future.result()
            if result["status"]:
                tqdm.write(f"run {result['run']} failed (exit {result['status']}): {result['log_tail']}")
            results.append(result)
    return results


def summarize(runs, methods: list[str]) -> tuple[list[dict], list[dict]]:
    """``summary`` rows (one per oracle and method) and the ``comparisons`` per oracle."""
    import numpy as np

    from online.analysis import summary_rows

    rows = summary_rows(runs)
    names = {METHOD_NAMES[m]: m for m in methods}
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        method = names.get(row["method"])
        if method is not None:
            table[(row["oracle"], method)] = {**row, "method": method, "analysis_name": row["method"]}
    summary, comparisons = [], []
    for oracle in sorted({o for o, _ in table}):
        base, top = table.get((oracle, "pretrained")), table.get((oracle, "ceiling"))
        for method in methods:
            row = table.get((oracle, method))
            if row is None:
                continue
            gain = math.nan
            if base and top and top["final_true_reward_mean"] != base["final_true_reward_mean"]:
                gain = (row["final_true_reward_mean"] - base["final_true_reward_mean"]) / (
                    top["final_true_reward_mean"] - base["final_true_reward_mean"]
                )
            summary.append({**row, "gain_fraction_of_ceiling": gain})
        optimistic = [table[(oracle, m)] for m in OPTIMISTIC if (oracle, m) in table]
        if optimistic:
            best = max(optimistic, key=lambda r: r["final_true_reward_mean"])
            entry = {"oracle": oracle, "best_optimistic": best["method"]}
            for other in ("greedy", "non-adaptive"):
                if (oracle, other) in table:
                    o = table[(oracle, other)]
                    se = float(np.hypot(best["final_true_reward_se"], o["final_true_reward_se"]))
                    diff = best["final_true_reward_mean"] - o["final_true_reward_mean"]
                    entry[f"lead_over_{other}"] = diff
                    entry[f"lead_over_{other}_in_se"] = diff / se if se > 0 else math.nan
            comparisons.append(entry)
    return summary, comparisons


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings of the committed figures: the defaults.",
    )
    p.add_argument(
        "--runs", default=str(REPO / "runs" / "bench_online"), help="folder of the benchmark's run directories"
    )
    p.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results"), help="folder for online.json and online_report/"
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per (oracle, method) (default 5)")
    p.add_argument("--oracles", nargs="+", default=list(ORACLES), choices=ORACLES)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--rounds", type=int, default=4, help="rounds per run, round 0 included (default 4)")
    p.add_argument("--initial-queries", type=int, default=36, help="round 0's pretrained samples (default 36)")
    p.add_argument("--queries-per-round", type=int, default=12, help="queries per guided round (default 12)")
    p.add_argument("--particles", type=int, default=4, help="DAS particles K per prompt (default 4)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="run nothing: re-read the runs, rewrite the summary and report, keep the timings of online.json",
    )
    return p


def _summary_payload(args, results: list[dict], wall: float, previous: dict | None) -> dict:
    """Reads the runs back, writes the report, and returns online.json's content."""
    from benchmarks.common import machine
    from online.analysis import load_run, write_report

    run_dirs = sorted(
        Path(args.runs) / f"{o}-{m}-s{s}" for o in args.oracles for m in args.methods for s in range(args.seeds)
    )
    run_dirs = [d for d in run_dirs if d.is_dir()]
    report_dir = Path(args.out) / "online_report"
    written = write_report(run_dirs, report_dir, "Online loop on the embedded world: methods × oracles × seeds")
    runs = [run for run in (load_run(d, details=False) for d in run_dirs) if run is not None]
    summary, comparisons = summarize(runs, args.methods)
    report = written["report"]
    payload = {
        "machine": {**machine(), "threads": args.threads, "workers": args.workers},
        "settings": {k: v for k, v in vars(args).items() if k not in ("runs", "out", "summarize_only")},
        "wall_seconds": wall,
        "run_seconds": sum(r["seconds"] for r in results),
        "reused_runs": sum(1 for r in results if r["reused"]),
        "failed_runs": [r["run"] for r in results if r["status"]],
        "summary": summary,
        "comparisons": comparisons,
        "round_overhead_fraction": _round_overhead(runs),
        "report": str(report.relative_to(REPO)) if report.is_relative_to(REPO) else str(report),
        "runs_read": len(runs),
    }
    if previous is not None:  # the runs' timings come from the invocation that ran them
        keep = ("machine", "settings", "wall_seconds", "run_seconds", "reused_runs", "failed_runs")
        payload.update({key: previous[key] for key in keep if key in previous})
        payload["summarized_again"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return payload


def _print_summary(payload: dict, results: list[dict], out: Path, summarize_only: bool) -> None:
    for row in payload["summary"]:
        print(
            f"{row['oracle']:>12} {row['method']:>12}  "
            f"final {row['final_true_reward_mean']:.4f} ± {row['final_true_reward_se']:.4f}"
            f"  gain/ceiling {row['gain_fraction_of_ceiling']:.2f}"
        )
    for entry in payload["comparisons"]:
        print(json.dumps(entry, default=float))
    if summarize_only:
        print(f"summary rewritten from {payload['runs_read']} runs -> {out}")
    else:
        failed, minutes = len(payload["failed_runs"]), payload["wall_seconds"] / 60
        print(f"{len(results)} runs in {minutes:.1f} min ({payload['reused_runs']} reused, {failed} failed) -> {out}")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.rounds < 2 or args.seeds < 1 or args.workers < 1 or args.threads < 1:
        p.error("--rounds must be at least 2, and --seeds, --workers, --threads at least 1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    out = Path(args.out) / "online.json"
    previous = json.loads(out.read_text()) if args.summarize_only and out.is_file() else None
    if args.summarize_only and previous is None:
        p.error(f"--summarize-only needs an earlier {out}")
    started = time.perf_counter()
    results = [] if args.summarize_only else run_all(args)
    payload = _summary_payload(args, results, time.perf_counter() - started, previous)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, out)
    _print_summary(payload, results, out, args.summarize_only)
    return 1 if payload["failed_runs"] else 0


def _round_overhead(runs) -> dict:
    """Share of each guided round's time spent outside sampling and oracle calls (fit, checkpoint, ...)."""
    shares = []
    for run in runs:
        for row in run.rows[1:]:
            s = row.get("seconds") or {}
            if s.get("total"):
                shares.append((s["total"] - s.get("sample", 0.0) - s.get("query", 0.0)) / s["total"])
    if not shares:
        return {}
    shares.sort()
    return {"median": shares[len(shares) // 2], "max": shares[-1], "rounds": len(shares)}


if __name__ == "__main__":
    sys.exit(main())
