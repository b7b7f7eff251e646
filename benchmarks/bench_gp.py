"""GP surrogate benchmark (CPU): the sparse GP on every point against the exact GP on a subset.

Run: ``.venv/bin/python -m benchmarks.bench_gp`` -> ``benchmarks/results/gp.json``.
``--sections fit calibration smooth`` runs a subset (the others are kept from an existing
file); ``--gp-kwargs '{"inducing_points": 256}'`` changes the ``"gp"`` kind's hyperparameters
(recorded); ``--threads 2 1`` sets the thread counts of the N=4096 fit and ``--repeats 2`` how
often each is timed; the calibration sections run at ``--calibration-threads`` (default 1). A
run under ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep instead of spinning while they
wait, which matters when other jobs share the cores) stores its fit section under its own key;
the gp kind's timings of the last four earlier fit runs are kept under ``..._earlier_runs``.

* ``fit_n4096_d768``: N = 4096 training points of 768-d unit-norm CLIP-like features
  (``benchmarks.bench_surrogate.clip_like_data``, one draw of 5120 points split 4096 train /
  1024 test, so both share the reward function), the ``"gp"`` kind with its defaults (here the
  sparse GP on all 4096 points) fitted with ``torch.set_num_threads(t)`` for each ``--threads``
  (load average beside each time: the box's 2 cores are shared), against the exact GP on a
  random 512-point subset (``method="exact"``, ``max_points=512``: the previous default) in
  the same run; test RMSE against the noisy held-out rewards for both, and for predicting the
  training mean (this data's reward is nearly invisible in 32 PCA directions of isotropic
  768-d features, so the floor is close to the reward's std).
* ``calibration_16d``: ``benchmarks.bench_surrogate.synthetic_16d`` (1024 train / 1024 test,
  as in ``bench_surrogate``): RMSE against the noiseless function and the fraction of held-out
  points whose noiseless value lies in mean ± 2·std, for the default ``"gp"`` (sparse at
  N = 1024 > 512), the sparse GP trained by the ELBO (default epochs, and 100) and by the PLL,
  and the exact GP on 512 and on all 1024 points.
* ``calibration_smooth_3d``: the same on a smooth 3-d function (2048 train / 1024 test),
  where the GP's error is mostly the noise's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from benchmarks.bench_surrogate import clip_like_data, synthetic_16d
from surrogate import GPSurrogate, make_surrogate

RESULTS = Path(__file__).resolve().parent / "results" / "gp.json"
FIT_KEY = "fit_n4096_d768"
EARLIER = "_earlier_runs"


def _fit_key() -> str:
    """The fit section's key: runs under ``OMP_WAIT_POLICY=...`` are kept apart from default runs."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    return FIT_KEY if not policy else f"{FIT_KEY}_omp_wait_policy_{policy.lower()}"


SECTIONS = ("fit", "calibration", "smooth")


def _fit(model: GPSurrogate, x: torch.Tensor, y: torch.Tensor, threads: int) -> dict:
    """Fit with ``threads`` intra-op threads; seconds and the load average before and after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_before = list(os.getloadavg())
    try:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, y, seed=0)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return {
        "threads": threads,
        "seconds": round(seconds, 2),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
    }


def _scores(model: GPSurrogate, x: torch.Tensor, truth: torch.Tensor, noisy: torch.Tensor | None = None) -> dict:
    """RMSE against ``truth`` `(n,)`, coverage of mean ± 2·std and the median std on test features `(n, D)`."""
    with torch.no_grad():
        mean, std = (t.double() for t in model.posterior(x))
        _, pred_std = (t.double() for t in model.posterior(x, observation_noise=True))
    truth = truth.double()
    out = {
        "rmse": float(((mean - truth) ** 2).mean().sqrt()),
        "coverage_truth_in_mean_pm_2std": float(((truth - mean).abs() <= 2 * std).double().mean()),
        "median_std": float(std.median()),
    }
    if noisy is not None:
        inside = (noisy.double() - mean).abs() <= 2 * pred_std
        out["coverage_noisy_y_in_mean_pm_2_predictive_std"] = float(inside.double().mean())
    return out


def _info(model: GPSurrogate) -> dict:
    keep = ("n_fit", "subsampled", "method", "gp_input_dim", "noise", "inducing_points", "epochs", "steps")
    return {k: model.fit_info[k] for k in keep if k in model.fit_info}


def bench_fit(
    results: dict, gp_kwargs: dict, threads: list[int], repeats: int = 2, n: int = 4096, d: int = 768
) -> None:
    x_all, y_all = clip_like_data(n + 1024, d, torch.Generator().manual_seed(0))
    x, y, xt, yt = x_all[:n], y_all[:n], x_all[n:], y_all[n:]
    exact = GPSurrogate(d, method="exact", max_points=512)
    exact_timing = _fit(exact, x, y, threads=min(threads))
    exact_row = {**exact_timing, "fit_info": _info(exact), **_scores(exact, xt, yt)}
    print(f"exact GP on a 512-point subset: {exact_row}", flush=True)
    rows = []
    for repeat in range(repeats):
        for t in threads:
            model = make_surrogate("gp", input_dim=d, **gp_kwargs)
            row = {"repeat": repeat, **_fit(model, x, y, threads=t), "fit_info": _info(model)}
            row.update(_scores(model, xt, yt))
            rows.append(row)
            print(f"gp ({model.fit_info['method']}) with {t} thread(s): {row}", flush=True)
    summary = {}
    for t in threads:
        seconds = [r["seconds"] for r in rows if r["threads"] == t]
        summary[str(t)] = {"best_seconds": min(seconds), "worst_seconds": max(seconds), "repeats": len(seconds)}
    mean_rmse = float(((yt.double() - y.double().mean()) ** 2).mean().sqrt())
    results[_fit_key()] = {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "data": f"clip_like_data({n + 1024}, {d}, seed 0) split {n} train / 1024 test; RMSE against the noisy "
        "held-out rewards (noise std 0.1)",
        "gp": {"hyperparameters": model.hyperparameters, "by_threads": rows, "seconds_by_threads": summary},
        "exact_512_subset": {"hyperparameters": exact.hyperparameters, **exact_row},
        "rmse_predicting_training_mean": mean_rmse,
        "note": "each fit is timed alone, in this order: exact (at the fewest threads), then the gp kind at each "
        "thread count, the whole round repeated; the RMSE of the gp kind may differ between thread counts in the "
        "last digits. With 2 threads on 2 cores that other jobs also use, a fit's time depends mostly on whether "
        "another job is running at that moment (the load average beside each row)",
    }


def smooth_3d(
    n: int, generator: torch.Generator, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs `(n, 3)` in `[-1, 1]³`, true values `(n,)` and noisy observations `(n,)` of a smooth function."""
    x = torch.rand(n, 3, generator=generator) * 2 - 1
    f = torch.sin(3 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2]
    return x, f, f + noise * torch.randn(n, generator=generator)


def _calibration_table(data: tuple[torch.Tensor, ...], configs: dict[str, dict]) -> dict:
    x, y, xt, ft, yt = data
    table = {}
    for name, kwargs in configs.items():
        model = make_surrogate("gp", input_dim=x.shape[1], **kwargs)
        timing = _fit(model, x, y, threads=torch.get_num_threads())
        table[name] = {"fit_seconds": timing["seconds"], "kwargs": kwargs, "fit_info": _info(model)}
        table[name].update(_scores(model, xt, ft, yt))
        print(name, table[name], flush=True)
    return table


def _sparse_configs(gp_kwargs: dict) -> dict[str, dict]:
    return {
        "gp_default": dict(gp_kwargs),
        "sparse_elbo": {**gp_kwargs, "method": "sparse", "objective": "elbo"},
        "sparse_pll": {**gp_kwargs, "method": "sparse", "objective": "pll"},
        "exact_512_subset": {"method": "exact", "max_points": 512},
    }


def bench_calibration(results: dict, gp_kwargs: dict, n_train: int = 1024, n_test: int = 1024) -> None:
    g = torch.Generator().manual_seed(3)
    x, _, y = synthetic_16d(n_train, g)
    xt, ft, yt = synthetic_16d(n_test, g)
    configs = {
        **_sparse_configs(gp_kwargs),
        "sparse_elbo_100_epochs": {**gp_kwargs, "method": "sparse", "objective": "elbo", "epochs": 100},
        "exact_all_1024": {"method": "exact", "max_points": n_train},
    }
    results["calibration_16d"] = {
        "function": "sin(3 x.a) + 0.5 cos(5 x.b) + (x.c)^2, x ~ U[-1,1]^16, noise std 0.1 "
        "(benchmarks.bench_surrogate.synthetic_16d, generator seed 3, train drawn first)",
        "n_train": n_train,
        "n_test": n_test,
        "threads": torch.get_num_threads(),
        "nominal_coverage_2std": 0.9545,
        "rmse_is_against": "the noiseless function",
        "surrogates": _calibration_table((x, y, xt, ft, yt), configs),
    }


def bench_smooth(results: dict, gp_kwargs: dict, n_train: int = 2048, n_test: int = 1024) -> None:
    g = torch.Generator().manual_seed(4)
    x, _, y = smooth_3d(n_train, g)
    xt, ft, yt = smooth_3d(n_test, g)
    results["calibration_smooth_3d"] = {
        "function": "sin(3 x0) + x1^2 - 0.5 x2, x ~ U[-1,1]^3, noise std 0.1 (generator seed 4, train drawn first)",
        "n_train": n_train,
        "n_test": n_test,
        "threads": torch.get_num_threads(),
        "nominal_coverage_2std": 0.9545,
        "rmse_is_against": "the noiseless function",
        "note": "a smooth function the GP learns well: the error is mostly the noise's, so an epistemic std "
        "should be well below the noise std 0.1",
        "surrogates": _calibration_table((x, y, xt, ft, yt), _sparse_configs(gp_kwargs)),
    }


def _targets(results: dict) -> dict:
    targets = {}
    for key in sorted(k for k in results if k.startswith(FIT_KEY) and not k.endswith(EARLIER)):
        fit, suffix = results[key], key[len(FIT_KEY) :]
        rows = fit["gp"]["by_threads"]
        for t, seconds in fit["gp"]["seconds_by_threads"].items():
            targets[f"fit_le_30s_at_{t}_threads_best_repeat{suffix}"] = seconds["best_seconds"] <= 30.0
            targets[f"fit_le_30s_at_{t}_threads_every_repeat{suffix}"] = seconds["worst_seconds"] <= 30.0
        targets[f"every_point_used{suffix}"] = all(row["fit_info"]["n_fit"] == 4096 for row in rows)
        exact_rmse = fit["exact_512_subset"]["rmse"]
        targets[f"rmse_no_worse_than_exact_512{suffix}"] = all(row["rmse"] <= exact_rmse for row in rows)
    calibration = results.get("calibration_16d")
    if calibration:
        coverage = calibration["surrogates"]["gp_default"]["coverage_truth_in_mean_pm_2std"]
        targets["calibration_in_0.85_0.99"] = 0.85 <= coverage <= 0.99
    return targets


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--threads", type=int, nargs="*", default=[2, 1], help="thread counts of the N=4096 fit")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the N=4096 fit at each thread count")
    parser.add_argument("--calibration-threads", type=int, default=1)
    parser.add_argument("--gp-kwargs", type=json.loads, default={}, help="JSON dict of GP hyperparameters")
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict = {
        **previous,
        "benchmark": "gp",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (Python 3.10)
        "command": (f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if os.environ.get("OMP_WAIT_POLICY") else "")
        + "python -m benchmarks.bench_gp"
        + (f" --sections {' '.join(args.sections)}" if list(args.sections) != list(SECTIONS) else "")
        + (f" --gp-kwargs '{json.dumps(args.gp_kwargs)}'" if args.gp_kwargs else ""),
        "gp_kwargs": args.gp_kwargs,
        "sections_run_last": args.sections,
        "machine": {
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": "cpu",
            "load_average_at_start": list(os.getloadavg()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "note": "2 shared CPU cores; other jobs may run concurrently, so timings are noisy",
        },
    }
    command = results["command"]
    if "fit" in args.sections:
        key = _fit_key()
        if key in previous:  # keep the last few runs: timings on a shared box depend on the other jobs
            earlier = [previous[key], *previous.get(f"{key}{EARLIER}", [])]
            results[f"{key}{EARLIER}"] = [{k: run[k] for k in ("command", "gp") if k in run} for run in earlier][:4]
        bench_fit(results, args.gp_kwargs, args.threads, args.repeats)
        results[_fit_key()]["command"] = command
    torch.set_num_threads(args.calibration_threads)
    if "calibration" in args.sections:
        bench_calibration(results, args.gp_kwargs)
        results["calibration_16d"]["command"] = command
    if "smooth" in args.sections:
        bench_smooth(results, args.gp_kwargs)
        results["calibration_smooth_3d"]["command"] = command
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = _targets(results)
    print(json.dumps(results["targets"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
