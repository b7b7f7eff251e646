"""The online loop: sample, query the black box, keep the answers, fit, checkpoint.

Round ``k``:

1. sample the round's prompts with DAS guided by the surrogate of round ``k − 1`` (round 0
   samples the pretrained model), split across processes and gathered on the main one;
2. stage the batch on disk, then ask the oracle about every item, each answer made durable
   as it arrives (a resumed round asks only about the items still unanswered);
3. write the round's dataset shard: from here on the queries are part of the dataset;
4. fit the surrogate on all valid rows so far and broadcast it;
5. write the round's checkpoint (surrogate, resolved config, RNG seeds, metrics) and,
   last, its ``COMPLETE`` marker.

Every random stream of round ``k`` is seeded from ``(seed, k, stream, rank)``, so a resumed
run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from online import builders, faults
from online.distributed import broadcast_from_main, gather_to_main, shard
from online.errors import RunError
from online.guidance import SurrogateReward, ZeroReward
from online.metrics import diversity, plot_reward_vs_queries, print_table, summary, write_metrics_lines
from online.oracles import query_with_retries
from online.run_directory import RunDirectory
from online.sampling import merge_batches, sample_batch
from online.storage import (
    AnswerJournal,
    atomic_write_json,
    complete_rounds,
    data_shard,
    load_dataset,
    load_rows,
    load_stats,
    mark_complete,
    round_dir,
    save_rows,
)
from online.tracking import log_round, start_trackers
from online.validation import resume_config

STREAMS = {"prompts": 1, "sample": 2, "noise": 3, "fit": 4, "thompson": 5}


def stream_seed(seed: int, round_index: int, stream: str, rank: int = 0) -> int:
    """The seed of one random stream of one round on one process."""
    return (seed * 1_000_003 + round_index * 10_007 + STREAMS[stream] * 101 + rank) % (2**62)


def round_prompts(prompts: list[str], count: int, seed: int, round_index: int) -> list[str]:
    """`count` prompts drawn uniformly with replacement for a round."""
    generator = torch.Generator().manual_seed(stream_seed(seed, round_index, "prompts"))
    picks = torch.randint(len(prompts), (count,), generator=generator)
    return [prompts[i] for i in picks.tolist()]


def run_training(config, accelerator, overrides: dict | None = None) -> Path:
    """Runs (or resumes) the loop to ``config.loop.num_rounds`` rounds; returns the run dir.

    Args:
        config: the loop config (validated here again; nothing is created before that).
        accelerator: the ``accelerate.Accelerator`` of this process.
        overrides: on a resume, the fields given explicitly on the command line (see
            :func:`online.validation.resume_config`); None takes the safe fields of `config`.
    """
    if config.resume_from:
        config = resume_config(config, overrides)
    with RunDirectory.opened(config, accelerator) as run:
        return _train(config, accelerator, run)


def _train(config, accelerator, run: RunDirectory) -> Path:
    from surrogate import load_surrogate

    main = accelerator.is_main_process
    device = accelerator.device
    adapter = builders.build_adapter(config, device)
    featurizer = builders.build_featurizer(config, device)
    oracle = builders.build_oracle(config) if main else None
    policy = builders.query_policy(config)
    prompts = builders.read_prompts(config.prompts.train_file)
    sampler_kwargs = builders.sampler_kwargs(config)
    run_dir = run.path
    if main:
        if run.resuming:
            run.verify_for_resume(featurizer.dim)
        else:
            run.create(config.overwrite, config.to_dict())
    accelerator.wait_for_everyone()
    start_trackers(config, accelerator, run_dir)  # now that the run directory exists: its logs go inside it

    done = complete_rounds(run_dir)
    surrogate = None
    if done:
        surrogate = load_surrogate(
            round_dir(run_dir, done[-1]) / "surrogate.safetensors",
            expected_kind=config.surrogate.kind,
            expected_input_dim=featurizer.dim,
            device=device,
        )
    rows = [json.loads((round_dir(run_dir, r) / "metrics.json").read_text()) for r in done]
    first = done[-1] + 1 if done else 0
    if main and first > 0:
        print(f"Resuming {run_dir} after round {first - 1} (running to {config.loop.num_rounds} rounds).")

    rounds = tqdm(range(first, config.loop.num_rounds), desc="rounds", disable=not (main and config.progress))
    for k in rounds:
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        folder = round_dir(run_dir, k)
        # -- 1-3. the round's paid-for rows: from disk if a crash left them, else sampled and queried
        need_sampling = broadcast_from_main(
            main and not data_shard(run_dir, k).exists() and not (folder / "batch.safetensors").exists(), accelerator
        )
        if need_sampling:
            tick = time.perf_counter()
            batch = _sample_round(config, k, adapter, featurizer, surrogate, prompts, sampler_kwargs, accelerator)
            seconds["sample"] = time.perf_counter() - tick
            if main:
                _check_finite(batch, k)
                faults.crash_point("sampled", k)
                stats = {
                    "ess_fraction": float(batch["ess_fraction"].mean()),
                    "log_normalizer": float(batch["log_normalizer"].mean()),
                }
                save_rows(
                    folder / "batch.safetensors",
                    {"images": batch["images"], "features": batch["features"]},
                    batch["prompts"],
                    k,
                    stats,
                )
        if main:
            tick = time.perf_counter()
            failed = _query_round(config, run_dir, k, oracle, policy)
            seconds["query"] = time.perf_counter() - tick
        accelerator.wait_for_everyone()

        # -- 4. fit on everything so far (main), broadcast
        tick = time.perf_counter()
        fit_info = {}
        if main:
            shard_rows, _ = load_rows(data_shard(run_dir, k))
            batch_stats = load_stats(data_shard(run_dir, k))  # kept on disk: a resumed round reports them too
            calibration = _calibration(surrogate, shard_rows)
            surrogate, fit_info = _fit(config, run_dir, k, surrogate, featurizer.dim)
            surrogate.save(folder / "surrogate.safetensors")
            faults.crash_point("checkpoint", k)
            surrogate = surrogate.to(device)
        if accelerator.num_processes > 1:
            checkpoint = broadcast_from_main(
                (folder / "surrogate.safetensors").read_bytes() if main else None, accelerator
            )
            if not main:
                surrogate = _surrogate_from_bytes(checkpoint, device)
        seconds["fit"] = time.perf_counter() - tick

        # -- 5. checkpoint and metrics (main)
        if main:
            tick = time.perf_counter()
            row = _round_metrics(k, shard_rows, rows, failed, batch_stats, calibration, fit_info)
            seconds["checkpoint"] = time.perf_counter() - tick
            seconds["total"] = time.perf_counter() - started
            row["seconds"] = seconds
            atomic_write_json(folder / "config.json", config.to_dict())
            atomic_write_json(
                folder / "rng.json",
                {
                    "seed": config.seed,
                    "round": k,
                    "streams": {s: stream_seed(config.seed, k, s) for s in STREAMS},
                    "sample_per_rank": [
                        stream_seed(config.seed, k, "sample", r) for r in range(accelerator.num_processes)
                    ],
                },
            )
            atomic_write_json(folder / "metrics.json", row)
            rows.append(row)
            write_metrics_lines(run_dir / "metrics.jsonl", rows)
            log_round(accelerator, row, shard_rows["images"])
            mark_complete(run_dir, k)
            rounds.set_postfix(true_mean=f"{row['true_reward']['mean']:.3f}")
        accelerator.wait_for_everyone()

    if main and rows:
        print_table(rows)
        plot_reward_vs_queries(
            rows, run_dir / "reward_vs_queries.png", f"{config.run_name}: {config.oracle.kind} oracle"
        )
        if config.get("report", True):
            _write_run_report(run_dir, f"{config.run_name}: {config.oracle.kind} oracle")
        print(f"Run directory: {run_dir} (reward_vs_queries.png, report/report.html, metrics.jsonl, round_*/)")
    return run_dir


def _write_run_report(run_dir: Path, title: str) -> None:
    """The offline analysis of this one run, in ``<run_dir>/report``; a failure there never fails the run."""
    from online.analysis import write_report

    try:
        write_report([run_dir], run_dir / "report", title)
    except Exception as error:  # noqa: BLE001 - the run's data is complete; the report is a convenience
        print(
            f"warning: the run's report could not be written ({type(error).__name__}: {error}); "
            f"run python -m online.analysis {run_dir} --out DIR to retry."
        )


def _sample_round(config, k, adapter, featurizer, surrogate, prompts, sampler_kwargs, accelerator) -> dict | None:
    """This round's batch on the main process (each process samples its share of prompts).

    Round 0, and every round under ``smc.guidance="none"``, samples the pretrained chain (one
    particle per prompt); ``"oracle"`` guides DAS by the true oracle (the ceiling); the other
    modes by the surrogate of round ``k − 1``.
    """
    mode = config.smc.guidance
    if k == 0 or surrogate is None or mode == "none":
        count = config.loop.initial_queries if k == 0 else config.loop.queries_per_round
        per_prompt = 1
        zero = ZeroReward()
        rewards = lambda call: zero  # noqa: E731
        kwargs = {**sampler_kwargs, "num_particles": 1}  # the pretrained chain, nothing else
    else:
        per_prompt = config.loop.images_per_prompt
        count = config.loop.queries_per_round // per_prompt
        rewards = _guidance(config, k, featurizer, surrogate, accelerator.process_index)
        kwargs = sampler_kwargs
    mine = shard(round_prompts(prompts, count, config.seed, k), accelerator)
    generator = torch.Generator(device=accelerator.device).manual_seed(
        stream_seed(config.seed, k, "sample", accelerator.process_index)
    )
    part = (
        sample_batch(
            adapter,
            rewards,
            featurizer,
            mine,
            per_prompt,
            kwargs,
            config.smc.prompts_per_call,
            generator,
            progress=config.progress and accelerator.is_main_process,
        )
        if mine
        else None
    )
    parts = gather_to_main(part, accelerator)
    return merge_batches([p for p in parts if p is not None]) if parts is not None else None


def _guidance(config, k: int, featurizer, surrogate, rank: int):
    """``call -> reward`` for round `k`: the true oracle (the ceiling), the surrogate's optimistic
    score or mean, or (Thompson) a fresh posterior draw for every sampler call, seeded from
    ``(seed, k, rank, call)``."""
    mode = config.smc.guidance
    if mode == "oracle":
        reward = builders.build_oracle_reward(config)
        return lambda call: reward
    if mode != "thompson":
        reward = SurrogateReward(featurizer, surrogate, mode=mode)
        return lambda call: reward
    base = stream_seed(config.seed, k, "thompson", rank)

    def draw(call: int) -> SurrogateReward:
        generator = torch.Generator().manual_seed((base * 1_009 + call) % 2**62)
        return SurrogateReward(featurizer, surrogate, mode="thompson", generator=generator)

    return draw


def _check_finite(batch: dict, k: int) -> None:
    """A batch with NaN or inf pixels or features is never shown to the oracle."""
    bad = ~torch.isfinite(batch["images"]).flatten(1).all(1) | ~torch.isfinite(batch["features"]).all(1)
    if bool(bad.any()):
        raise RunError(
            f"Round {k} sampled {int(bad.sum())} of {bad.numel()} images with NaN or inf pixels or features; nothing was "
            "queried. Lower the guidance strength (raise smc.kl_coeff, lower surrogate beta) or use model.dtype=fp32."
        )


def _query_round(config, run_dir: Path, k: int, oracle, policy) -> int:
    """Asks the oracle about the round's unanswered items, then writes the dataset shard."""
    shard_path = data_shard(run_dir, k)
    folder = round_dir(run_dir, k)
    if shard_path.exists():  # a crash after the shard was written: its rows are all there
        (folder / "batch.safetensors").unlink(missing_ok=True)
        rows, _ = load_rows(shard_path)
        return int((~rows["valid"]).sum())
    staged, prompts = load_rows(folder / "batch.safetensors")
    images = staged["images"]
    n = images.shape[0]
    noise = torch.randn(
        n, generator=torch.Generator().manual_seed(stream_seed(config.seed, k, "noise")), dtype=torch.float64
    )
    journal = AnswerJournal(folder / "answers.jsonl")
    answered = journal.read()
    todo = [i for i in range(n) if i not in answered]

    def keep(answers: list[dict]) -> None:
        for row in answers:
            value = row["value"]
            row["true_reward"] = value
            row["reward"] = None if value is None else value + config.oracle.noise_std * float(noise[row["index"]])
        journal.append(answers)
        faults.crash_point("query", k)

    if todo:
        query_with_retries(oracle, images, prompts, todo, policy, keep)
    answered = journal.read()
    valid = torch.tensor([answered[i]["status"] == "ok" for i in range(n)])
    observed = torch.tensor(
        [answered[i]["reward"] if answered[i]["status"] == "ok" else math.nan for i in range(n)], dtype=torch.float64
    )
    true = torch.tensor(
        [answered[i]["true_reward"] if answered[i]["status"] == "ok" else math.nan for i in range(n)],
        dtype=torch.float64,
    )
    uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    save_rows(
        shard_path,
        {"features": staged["features"], "rewards": observed, "true_rewards": true, "valid": valid, "images": uint8},
        prompts,
        k,
        load_stats(folder / "batch.safetensors"),
    )
    faults.crash_point("shard", k)
    (folder / "batch.safetensors").unlink(missing_ok=True)  # the shard now holds everything
    return int((~valid).sum())


def _fit(config, run_dir: Path, k: int, previous, input_dim: int):
    """Fits the surrogate on every valid row of rounds 0..k."""
    data, _, _ = load_dataset(run_dir, up_to_round=k)
    valid = data["valid"]
    features, rewards = data["features"][valid].float(), data["rewards"][valid].float()
    if features.shape[0] < 2:
        raise RunError(
            f"Only {features.shape[0]} valid oracle answers so far, and the surrogate needs at least 2: the oracle failed on "
            f"(nearly) every item (its errors are in {run_dir / 'round_*' / 'answers.jsonl'}); fix it, then start the run "
            "again with --config.overwrite=True (a resume keeps failed answers as failed)."
        )
    warm = bool(config.surrogate.warm_start) and previous is not None and previous.kind == config.surrogate.kind
    surrogate = previous if warm else builders.build_surrogate(config, input_dim)
    generator = torch.Generator().manual_seed(stream_seed(config.seed, k, "fit"))
    info = surrogate.fit(features, rewards, generator=generator, round=k, warm_start=warm)
    return surrogate, {key: value for key, value in (info or {}).items() if isinstance(value, (int, float, str, bool))}


def _calibration(surrogate, rows: dict) -> dict | None:
    """How well last round's surrogate predicted this round's answers, before seeing them:
    coverage of its 50/80/95% intervals, NLL, RMSE and rank correlation
    (:func:`surrogate.calibration_metrics`; the noise-free true rewards as ``truth``)."""
    from surrogate import calibration_metrics

    if surrogate is None or not bool(rows["valid"].any()):
        return None
    valid = rows["valid"]
    features = rows["features"][valid].float().to(surrogate_device(surrogate))
    return calibration_metrics(surrogate, features, rows["rewards"][valid], truth=rows["true_rewards"][valid])


def surrogate_device(surrogate) -> torch.device:
    return getattr(surrogate, "device", torch.device("cpu"))


def _surrogate_from_bytes(data: bytes, device):
    """The surrogate the main process fitted, on another process (from its checkpoint bytes)."""
    import tempfile

    from surrogate import load_surrogate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "surrogate.safetensors"
        path.write_bytes(data)
        return load_surrogate(path, device=device)


def _round_metrics(k, shard_rows, previous_rows, failed, batch_stats, calibration, fit_info) -> dict:
    queries = int(shard_rows["valid"].numel())
    total = queries + (previous_rows[-1]["queries_total"] if previous_rows else 0)
    return {
        "round": k,
        "queries_round": queries,
        "queries_total": total,
        "failed_queries": failed,
        "true_reward": summary(shard_rows["true_rewards"]),
        "observed_reward": summary(shard_rows["rewards"]),
        "diversity": diversity(shard_rows["features"]),
        "surrogate_prediction_rmse": None if calibration is None else calibration["rmse"],
        "calibration": calibration,
        "surrogate_fit": fit_info,
        **batch_stats,
    }
