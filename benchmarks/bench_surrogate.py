"""Surrogate benchmark (CPU): fit times, UCB bonus throughput, GP scaling, calibration.

Run: ``.venv/bin/python -m benchmarks.bench_surrogate`` -> ``benchmarks/results/surrogate.json``.
``--sections fit calibration gp_scaling threads`` runs a subset and merges it into the existing
file (``sections_run_last`` says which, ``machine_of_previous_run`` keeps the older machine
info); ``--threads N`` sets ``torch.set_num_threads`` for the run (recorded as
``machine.threads``). On the shared 2-core box, 2 OpenMP threads are badly oversubscribed
when other jobs run, so the committed figures were taken with ``--threads 1``.

* fit time at N=4096 points of 768-d features (unit-norm, CLIP-like) for each surrogate
  with default hyperparameters;
* bonus throughput for 1024 query points: the cached-Cholesky bonus against the
  reference's way (recompute `φ` over the whole dataset and its normalized covariance at
  every call, then invert a matrix per query in a Python loop), same run, as a ratio;
* the exact GP's fit time as N grows (stops after the first size over a minute);
* calibration on a noisy 16-d synthetic function with known ground truth: fraction of
  held-out points whose true value lies in mean ± 2·std (epistemic std), and whose noisy
  observation lies in mean ± 2·predictive std (epistemic + noise).
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

from surrogate import GPSurrogate, calibration_metrics, make_surrogate

RESULTS = Path(__file__).resolve().parent / "results" / "surrogate.json"


def clip_like_data(n: int, d: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm features `(n, d)` and a smooth noisy reward `(n,)`."""
    x = torch.randn(n, d, generator=generator)
    x = x / x.norm(dim=1, keepdim=True)
    w = torch.randn(d, generator=generator)
    v = torch.randn(d, generator=generator)
    y = torch.tanh(3 * x @ w) + 0.5 * (x @ v) ** 2 + 0.1 * torch.randn(n, generator=generator)
    return x, y


def synthetic_16d(
    n: int, generator: torch.Generator, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs `(n, 16)`, true values `(n,)` and noisy observations `(n,)` of a fixed function."""
    fixed = torch.Generator().manual_seed(1234)
    a, b, c = (torch.randn(16, generator=fixed) / 4 for _ in range(3))
    x = torch.rand(n, 16, generator=generator) * 2 - 1
    f = torch.sin(3 * x @ a) + 0.5 * torch.cos(5 * x @ b) + (x @ c) ** 2
    return x, f, f + noise * torch.randn(n, generator=generator)


def timed_fit(model, x, y, seed: int = 0) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, seed=seed)
    return time.perf_counter() - start


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def naive_reference_bonus(
    model, data_x: torch.Tensor, query_x: torch.Tensor, alpha: float = 0.01, lam: float = 1e-3
) -> torch.Tensor:
    """The reference's way: recompute φ and the normalized covariance, invert per sample."""
    phi_data = model.features(data_x)
    cov = phi_data.T @ phi_data / phi_data.shape[0]
    phi_q = model.features(query_x)
    out = []
    for i in range(phi_q.shape[0]):
        inv = torch.linalg.inv(cov + lam * torch.eye(cov.shape[0]))
        out.append(alpha * torch.sqrt(phi_q[i] @ inv @ phi_q[i]).clamp(max=10.0))
    return torch.stack(out)


def bench_fit_and_bonus(n: int, d: int, results: dict) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = clip_like_data(n, d, g)
    fits = {}
    for kind in ("ucb", "bootstrap", "gp"):
        model = make_surrogate(kind, input_dim=d)
        seconds = timed_fit(model, x, y)
        fits[kind] = {
            "seconds": round(seconds, 2),
            "fit_info": _short_info(model.fit_info),
            "hyperparameters": model.hyperparameters,
        }
        print(f"fit {kind:9s} N={n} D={d}: {seconds:.1f} s", flush=True)
        if kind == "ucb":
            ucb = model
    fits["greedy"] = {
        "seconds": fits["ucb"]["seconds"],
        "note": "same model and fit as 'ucb' (scored by its posterior mean); not timed separately",
    }
    fits["gp"]["note"] = (
        f"default method='auto' with {n} > max_points=512: the sparse variational GP on all {n} points "
        "(512 inducing points, PCA to 32 dims); only the kernel, noise and mean hyperparameters come from the "
        "exact GP's marginal likelihood on a random subset of 512 points (objective 'mll_subset', max_iter=100)"
    )
    results["fit_n4096_d768"] = fits

    q = clip_like_data(1024, d, torch.Generator().manual_seed(1))[0]
    with torch.no_grad():
        phi_q = ucb.features(q)
        phi_data = ucb.features(x)
        ours_end_to_end = best_time(lambda: ucb.bonus(ucb.features(q)), 5)
        ours_bonus_only = best_time(lambda: ucb.bonus(phi_q), 20)
        naive_end_to_end = best_time(lambda: naive_reference_bonus(ucb, x, q), 2)

        def naive_given_phi():
            cov = phi_data.T @ phi_data / phi_data.shape[0]
            for i in range(phi_q.shape[0]):
                inv = torch.linalg.inv(cov + 1e-3 * torch.eye(cov.shape[0]))
                torch.sqrt(phi_q[i] @ inv @ phi_q[i])

        naive_bonus_only = best_time(naive_given_phi, 2)
    results["bonus_throughput_1024_queries"] = {
        "queries": 1024,
        "data_points": n,
        "ours_end_to_end_s": ours_end_to_end,
        "naive_end_to_end_s": naive_end_to_end,
        "speedup_end_to_end": naive_end_to_end / ours_end_to_end,
        "ours_bonus_only_s": ours_bonus_only,
        "naive_bonus_only_s": naive_bonus_only,
        "speedup_bonus_only": naive_bonus_only / ours_bonus_only,
        "queries_per_s_ours_end_to_end": 1024 / ours_end_to_end,
        "queries_per_s_naive_end_to_end": 1024 / naive_end_to_end,
        "note": "end_to_end includes the MLP forward for phi of the queries (both) and, for the naive "
        "reference, phi and the normalized covariance over the whole dataset recomputed per call plus one "
        "16x16 inverse per query in a Python loop; bonus_only takes phi as given.",
    }
    print(json.dumps(results["bonus_throughput_1024_queries"], indent=1), flush=True)


def bench_gp_scaling(d: int, sizes: list[int], results: dict, limit_s: float = 60.0) -> None:
    rows = []
    for n in sizes:
        x, y = clip_like_data(n, d, torch.Generator().manual_seed(2))
        model = GPSurrogate(d, max_points=n)
        seconds = timed_fit(model, x, y)
        rows.append(
            {"n": n, "seconds": round(seconds, 2), "iterations_note": "fit_gpytorch_mll (L-BFGS-B), exact Cholesky"}
        )
        print(f"gp N={n}: {seconds:.1f} s", flush=True)
        if seconds > limit_s:
            break
    under = [r["n"] for r in rows if r["seconds"] <= limit_s]
    results["gp_scaling_d768_pca32"] = {
        "threads": torch.get_num_threads(),
        "load_average_at_end": list(os.getloadavg()),
        "rows": rows,
        "largest_n_tried_under_60s": max(under) if under else None,
        "fallback": "beyond max_points (default 512) method='auto' (default) fits the sparse GP on every point; only "
        "method='exact' fits a uniformly random subset of max_points points drawn with the fit generator, "
        "with a UserWarning",
    }


CALIBRATION_CONFIGS = {
    "ucb": ("ucb", {}),
    "ucb_known_noise": ("ucb", {"label_noise_std": "known"}),
    "ucb_normalized_reference": ("ucb", {"bonus_covariance": "normalized", "lam": 1e-3}),  # with UCB(beta=0.01)
    "bootstrap": ("bootstrap", {}),
    "bootstrap_known_noise": ("bootstrap", {"label_noise_std": "known"}),
    "gp": ("gp", {}),
    "greedy": ("ucb", {}),  # the greedy method scores with the ucb model's posterior mean
}


def _calibration_row(kind: str, kwargs: dict, x, y, xt, ft, yt, seed: int = 0) -> dict:
    """Fit one surrogate and score it on held-out data with :func:`surrogate.calibration_metrics`."""
    model = make_surrogate(kind, input_dim=x.shape[1], **kwargs)
    seconds = timed_fit(model, x, y, seed=seed)
    metrics = calibration_metrics(model, xt, yt, truth=ft)
    with torch.no_grad():
        mean, std = model.posterior(xt)
        _, pstd = model.posterior(xt, observation_noise=True)
    return {
        "fit_seconds": round(seconds, 2),
        "rmse_vs_truth": metrics["truth_rmse"],
        "coverage_truth_in_mean_pm_2std": float(((ft - mean).abs() <= 2 * std).float().mean()),
        "coverage_noisy_y_in_mean_pm_2_predictive_std": float(((yt - mean).abs() <= 2 * pstd).float().mean()),
        "coverage_truth_50_80_95": [metrics[f"truth_coverage_{p}"] for p in (50, 80, 95)],
        "coverage_noisy_y_50_80_95": [metrics[f"coverage_{p}"] for p in (50, 80, 95)],
        "median_std": float(std.median()),
        "calibration": metrics,
        "fit_calibration": {k: v for k, v in model.fit_info.get("calibration", {}).items()},
    }


def _calibration_table(x, y, xt, ft, yt, noise_std: float, seeds: tuple[int, ...] = ()) -> dict:
    table = {}
    for name, (kind, kwargs) in CALIBRATION_CONFIGS.items():
        kwargs = {k: noise_std if v == "known" else v for k, v in kwargs.items()}
        table[name] = _calibration_row(kind, kwargs, x, y, xt, ft, yt)
        if seeds and name in ("ucb", "bootstrap", "gp"):  # how much the figure moves with the fit's seed
            by_seed = {}
            for seed in seeds:
                by_seed[str(seed)] = _calibration_row(kind, kwargs, x, y, xt, ft, yt, seed=seed)["calibration"]
            table[name]["truth_coverage_95_by_fit_seed"] = {k: v["truth_coverage_95"] for k, v in by_seed.items()}
        row = table[name]
        truth, noisy = row["coverage_truth_50_80_95"], row["coverage_noisy_y_50_80_95"]
        print(f"{name:26s} truth 50/80/95 {truth}  noisy y {noisy}", flush=True)
    return table


CALIBRATION_NOTE = (
    "calibration = surrogate.calibration_metrics on the held-out rows: coverage_50/80/95 = fraction of noisy answers "
    "in mean +- z std with the predictive std (z = 0.674, 1.282, 1.960), truth_coverage_* = fraction of noise-free "
    "values in mean +- z std with the epistemic std; nll = mean Gaussian NLL of the noisy answers; spearman = rank "
    "correlation of mean and answer. *_known_noise: the surrogate is told the label-noise std (label_noise_std); "
    "otherwise the noise is unknown to it and all held-out error counts as model error. fit seed 0 unless noted."
)


def bench_calibration(results: dict, n_train: int = 1024, n_test: int = 1024) -> None:
    g = torch.Generator().manual_seed(3)
    x, _, y = synthetic_16d(n_train, g)
    xt, ft, yt = synthetic_16d(n_test, g)
    table = _calibration_table(x, y, xt, ft, yt, noise_std=0.1, seeds=(1, 2, 3, 4))
    results["calibration_16d"] = {
        "function": "sin(3 x.a) + 0.5 cos(5 x.b) + (x.c)^2, x ~ U[-1,1]^16, noise std 0.1",
        "n_train": n_train,
        "n_test": n_test,
        "nominal_coverage_2std": 0.9545,
        "note": CALIBRATION_NOTE,
        "surrogates": table,
    }
    targets = results.setdefault("targets", {})
    for kind in ("ucb", "bootstrap", "gp"):  # the acceptance bar: 95% coverage of the true function in [0.85, 0.99]
        coverage = table[kind]["calibration"]["truth_coverage_95"]
        targets[f"calibration_16d_{kind}_truth_coverage_95_in_0.85_0.99"] = 0.85 <= coverage <= 0.99


def world_samples(n: int, seed: int = 0, cache_dir: Path = Path("/tmp")) -> torch.Tensor:
    """``n`` images `(n, 3, 32, 32)` of the shipped pixel model (15 steps, CFG 3, eta 1), cached in ``cache_dir``."""
    from das.adapters.pixel import PixelUNetAdapter
    from das.ancestral import sample_images
    from world import DEFAULT_MODEL_PATH, PROMPTS

    cache = cache_dir / f"das_bench_surrogate_world_n{n}_seed{seed}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    adapter = PixelUNetAdapter.from_pretrained(
        DEFAULT_MODEL_PATH, num_steps=15, guidance_scale=3.0, eta=1.0, dtype="fp32", device="cpu"
    )
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    start = time.perf_counter()
    with torch.no_grad():
        images = sample_images(adapter, prompts, torch.Generator().manual_seed(seed), batch_size=32)
    print(f"sampled {n} world images in {time.perf_counter() - start:.0f} s (cached in {cache})", flush=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(images, tmp)
    os.replace(tmp, cache)
    return images


def bench_calibration_world(results: dict, n: int = 1024, n_test: int = 256) -> None:
    """Calibration on embedded-world data: the oracles' answers on pretrained samples, with the world's label noise."""
    from das.rewards.colorfulness import ColorfulnessReward
    from das.rewards.jpeg import JPEGCompressibility
    from world import ORACLE_NOISE_STD, WorldFeaturizer

    images = world_samples(n)
    with torch.no_grad():
        features = WorldFeaturizer()(images)
        oracles = {"jpeg": JPEGCompressibility(quality=95)(images), "colorfulness": ColorfulnessReward()(images)}
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(n, generator=g)
    train, test = perm[n_test:], perm[:n_test]
    out = {}
    for name, truth in oracles.items():
        noise = ORACLE_NOISE_STD[name]
        noisy = truth + noise * torch.randn(n, generator=g)
        print(f"world {name}: noise std {noise}, reward std {float(truth.std()):.4g}", flush=True)
        x, y, xt, ft, yt = features[train], noisy[train], features[test], truth[test], noisy[test]
        table = _calibration_table(x, y, xt, ft, yt, noise_std=noise, seeds=(1, 2, 3, 4))
        out[name] = {"label_noise_std": noise, "reward_std": float(truth.std()), "surrogates": table}
    results["calibration_world"] = {
        "data": f"{n} images of the shipped pixel model checkpoints/pretrained/shapes32 (15 steps, CFG 3, eta 1, "
        f"one per prompt in turn), WorldFeaturizer 128-d features; truth = the oracle's noise-free answer, answers = "
        f"truth + N(0, ORACLE_NOISE_STD^2); {n - n_test} train / {n_test} held-out rows",
        "n_train": n - n_test,
        "n_test": n_test,
        "note": CALIBRATION_NOTE,
        "oracles": out,
    }


def bench_ucb_threads(n: int, d: int, results: dict, threads: tuple[int, ...] = (1,)) -> None:
    """UCB fit time at N=4096 with fewer intra-op threads (oversubscription check on a shared box)."""
    g = torch.Generator().manual_seed(0)
    x, y = clip_like_data(n, d, g)
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            model = make_surrogate("ucb", input_dim=d)
            seconds = timed_fit(model, x, y)
            epochs = model.fit_info["epochs"]
            rows.append(
                {
                    "threads": t,
                    "seconds": round(seconds, 2),
                    "epochs": epochs,
                    "seconds_per_epoch": round(seconds / epochs, 3),
                    "load_average": list(os.getloadavg()),
                }
            )
            print(f"ucb fit with {t} thread(s): {seconds:.1f} s over {epochs} epochs", flush=True)
    finally:
        torch.set_num_threads(default_threads)
    results["ucb_fit_n4096_d768_by_threads"] = {
        "rows": rows,
        "note": "the same fit as fit_n4096_d768.ucb with torch.set_num_threads(t); on a 2-core box shared with other "
        "jobs, 2 OpenMP threads are badly oversubscribed, so the 1-thread time is the fairer figure there",
    }


def _short_info(info: dict) -> dict:
    keep = ("epochs", "best_epoch", "best_val_mse", "noise_std", "n_fit", "subsampled", "gp_input_dim", "noise")
    return {k: info[k] for k in keep if k in info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--gp-sizes", type=int, nargs="*", default=[256, 512, 1024, 2048])
    parser.add_argument(
        "--sections",
        nargs="*",
        default=["fit", "calibration", "gp_scaling", "threads"],
        help="run only these sections and merge them into an existing --out file",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the sections run")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = _start_results(args)
    _run_sections(args, results)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    _record_targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(results, indent=2, default=lambda o: o if not isinstance(o, float) or math.isfinite(o) else None)
    )
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


def _start_results(args) -> dict:
    """The previous results file (sections not run are kept) with this run's machine record."""
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict = {
        **previous,
        "benchmark": "surrogate",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": "cpu",
            "load_average_at_start": list(os.getloadavg()),
            "note": "2 shared CPU cores; other jobs may run concurrently, so timings are noisy",
        },
    }
    results["sections_run_last"] = args.sections
    if previous.get("machine") and set(args.sections) != {"fit", "calibration", "gp_scaling", "threads"}:
        results["machine_of_previous_run"] = previous.get("machine_of_previous_run", previous["machine"])
        results["timestamp_of_previous_run"] = previous.get("timestamp_of_previous_run", previous.get("timestamp"))
    return results


def _run_sections(args, results: dict) -> None:
    if "fit" in args.sections:
        bench_fit_and_bonus(4096, 768, results)
    if "calibration" in args.sections:
        bench_calibration(results)
        bench_calibration_world(results)
    if "gp_scaling" in args.sections:
        bench_gp_scaling(768, args.gp_sizes, results)
    if "threads" in args.sections:
        bench_ucb_threads(4096, 768, results)


def _record_targets(results: dict) -> None:
    """Set the fit/bonus targets from the sections present in ``results`` (a fresh ``--out`` holds only those run)."""
    targets = results.setdefault("targets", {})
    fit = results.get("fit_n4096_d768")
    if fit is not None:
        targets["ucb_fit_le_15s"] = fit["ucb"]["seconds"] <= 15.0
        targets["bonus_speedup_ge_50x"] = results["bonus_throughput_1024_queries"]["speedup_bonus_only"] >= 50.0
    by_threads = results.get("ucb_fit_n4096_d768_by_threads", {}).get("rows", [])
    fit_times = ([fit["ucb"]["seconds"]] if fit is not None else []) + [r["seconds"] for r in by_threads]
    if by_threads:
        targets["ucb_fit_le_15s_any_thread_count"] = min(fit_times) <= 15.0


if __name__ == "__main__":
    main()
