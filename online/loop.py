"""The online loop: sample, query the black box, keep the answers, fit, checkpoint.

Round ``k``:

1. sample the round's prompts with DAS guided by the surrogate of round ``k − 1`` (round 0
   samples the pretrained model), split across processes and gathered on the main one;
2. stage the batch on disk, then ask the oracle (with its label noise,
   :class:`online.oracles.NoisyOracle`) about every item, each answer made durable as it
   arrives (a resumed round asks only about the items still unanswered);
3. write the round's dataset shard: from here on the queries are part of the dataset;
4. fit the surrogate on all valid rows so far and broadcast it;
5. write the round's checkpoint (surrogate, resolved config, RNG seeds, metrics) and,
   last, its ``COMPLETE`` marker.

Every random stream of round ``k`` is seeded from ``(seed, k, stream, rank)``
(:func:`online.seeds.stream_seed`), so a resumed run draws exactly what an uninterrupted
one would have. Every file is reached through :class:`online.run_directory.RunDirectory`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dasapp.stopping import deferred
from online import builders, faults
from online.distributed import broadcast_from_main
from online.errors import RunError
from online.guidance import SurrogateReward, ZeroReward
from online.metrics import plot_reward_vs_queries, print_table, round_metrics
from online.oracles import NoisyOracle
from online.progress import RoundProgress, bars_wanted
from online.run_directory import RoundFiles, RunDirectory
from online.sampling import SamplingSetup, merge_batches, non_finite_rows, sample_prompts
from online.seeds import STREAMS, call_seed, rng_record, round_prompts, stream_seed
from online.tracking import log_round, start_trackers
from online.validation import prepared_config

__all__ = ["STREAMS", "round_prompts", "run_training", "stream_seed", "train"]


@dataclass
class Training:
    """What the rounds of a run share: the config, the process, the run directory, the models,
    and what the complete rounds left (the last surrogate, the metrics rows)."""

    config: object
    accelerator: object
    run: RunDirectory
    adapter: object
    featurizer: object
    oracle: object  # the black box (main process only)
    prompts: list[str]
    surrogate: object = None
    rows: list[dict] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def run_training(config, accelerator, overrides: dict | None = None) -> Path:
    """Runs (or resumes) the loop to ``config.loop.num_rounds`` rounds; returns the run dir.

    Args:
        config: the loop config (validated here again; nothing is created before that).
        accelerator: the ``accelerate.Accelerator`` of this process.
        overrides: on a resume, the fields given explicitly on the command line (see
            :func:`online.validation.resume_config`); None takes the safe fields of `config`.
    """
    config = prepared_config(config, overrides)  # pure; every process, before the main one creates anything
    return train(config, accelerator)


def train(config, accelerator) -> Path:
    """:func:`run_training` for a config already resumed and validated on every process (the
    command line does both before it builds the ``Accelerator``); returns the run dir."""
    accelerator.wait_for_everyone()
    with RunDirectory.opened(config, accelerator) as run:
        return _train(config, accelerator, run)


def _train(config, accelerator, run: RunDirectory) -> Path:
    """Load the models → create or verify the run → restore → every round → the run's summary."""
    training = _load_models(config, accelerator, run)
    _prepare_directory(training)
    first = _restore(training)
    progress = RoundProgress(first, config.loop.num_rounds, enabled=training.main, bar=config.progress)
    try:
        for k in range(first, config.loop.num_rounds):
            progress.done(k, _run_round(training, k))
    finally:
        progress.close()
    if training.main and training.rows:
        _summarize(training)
    return run.path


# ---------------------------------------------------------------------------- opening stages
def _load_models(config, accelerator, run: RunDirectory) -> Training:
    """The sampler's model, the featurizer, the oracle (main process) and the prompts."""
    device = accelerator.device
    adapter = builders.build_adapter(config, device)
    featurizer = builders.build_featurizer(config, device)
    oracle = builders.build_oracle(config) if accelerator.is_main_process else None
    prompts = builders.read_prompts(config.prompts.train_file)
    return Training(config, accelerator, run, adapter, featurizer, oracle, prompts)


def _prepare_directory(training: Training) -> None:
    """Creates the run directory (a new run) or checks every file of it (a resume), then
    starts the trackers, whose logs go inside it."""
    config, run = training.config, training.run
    if training.main:
        if run.resuming:
            run.verify_for_resume(training.featurizer.dim)
            run.write_config(config.to_dict())  # the settings in force now (e.g. an extended loop.num_rounds)
        else:
            run.create(config.overwrite, config.to_dict())
    training.accelerator.wait_for_everyone()
    start_trackers(config, training.accelerator, run.path)


def _restore(training: Training) -> int:
    """Loads the last complete round's surrogate and every complete round's metrics; returns
    the first round to run."""
    from surrogate import load_surrogate

    run, done = training.run, training.run.complete_rounds()
    if done:
        training.surrogate = load_surrogate(
            run.round(done[-1]).surrogate_path,
            expected_kind=training.config.surrogate.kind,
            expected_input_dim=training.featurizer.dim,
            device=training.device,
        )
    training.rows = [run.round(r).read_metrics() for r in done]
    first = done[-1] + 1 if done else 0
    if training.main and first > 0:
        print(f"Resuming {run.path} after round {first - 1} (running to {training.config.loop.num_rounds} rounds).")
    return first


# ---------------------------------------------------------------------------- one round
def _run_round(training: Training, k: int) -> dict | None:
    """Round `k`: collect its answers → fit → checkpoint and record; its metrics row on the main process."""
    started = time.perf_counter()
    files = training.run.round(k)
    seconds = _collect(training, k, files)
    tick = time.perf_counter()
    shard_rows, calibration, fit_info = _fit_round(training, k, files)
    seconds["fit"] = time.perf_counter() - tick
    row = None
    if training.main:
        tick = time.perf_counter()
        row = round_metrics(k, shard_rows, training.rows, files.shard_stats(), calibration, fit_info)
        seconds["checkpoint"] = time.perf_counter() - tick
        seconds["total"] = time.perf_counter() - started
        row["seconds"] = seconds
        if k > 0:
            row["beta"] = builders.round_beta(training.config, k)  # the round's optimism β
        _record(training, files, row, shard_rows["images"])
    training.accelerator.wait_for_everyone()
    return row


def _collect(training: Training, k: int, files: RoundFiles) -> dict[str, float]:
    """The round's paid-for rows: from disk if a crash left them, else sampled and staged;
    then every unanswered item asked and the shard written (main). Returns the seconds spent."""
    seconds: dict[str, float] = {}
    main = training.main
    need_sampling = broadcast_from_main(main and not files.has_shard() and not files.has_batch(), training.accelerator)
    if need_sampling:
        tick = time.perf_counter()
        batch = _sample_round(training, k)
        seconds["sample"] = time.perf_counter() - tick
        if main:
            _check_finite(batch, k)
            faults.crash_point("sampled", k)
            files.save_batch(batch)
    if main:
        tick = time.perf_counter()
        _query_round(training, k, files)
        seconds["query"] = time.perf_counter() - tick
    training.accelerator.wait_for_everyone()
    return seconds


def _sample_round(training: Training, k: int) -> dict | None:
    """This round's batch on the main process (each process samples its share of prompts).

    Round 0, and every round under ``smc.guidance="none"``, samples the pretrained chain (one
    particle per prompt); ``"oracle"`` guides DAS by the true oracle (the ceiling); the other
    modes by the surrogate of round ``k − 1``. With a pool (:func:`_pool_size`) the round samples
    the pool the same way, ``loop.pool_pretrained`` of it from the pretrained chain in a guided
    round (:func:`_add_pretrained`), and keeps the batch :func:`_select_from_pool` picks from it.
    """
    config, accelerator = training.config, training.accelerator
    queries = config.loop.initial_queries if k == 0 else config.loop.queries_per_round
    pool = _pool_size(config, k, training.surrogate)
    pretrained = k == 0 or training.surrogate is None or config.smc.guidance == "none"
    extra = int(config.loop.pool_pretrained) if pool and not pretrained else 0
    if pretrained:
        per_prompt = 1
        zero = ZeroReward()
        rewards = lambda call: zero  # noqa: E731
        settings = builders.sampler_settings(config, num_particles=1)  # the pretrained chain, nothing else
    else:
        per_prompt = config.loop.images_per_prompt
        rewards = _guidance(config, k, training.featurizer, training.surrogate, accelerator.process_index)
        settings = builders.sampler_settings(config)
    count = ((pool - extra) or queries) // per_prompt
    setup = SamplingSetup(
        training.adapter,
        training.featurizer,
        settings,
        config.smc.prompts_per_call,
        progress=bars_wanted(config.progress, accelerator.is_main_process),
    )
    prompts = round_prompts(training.prompts, count, config.seed, k)
    seed = stream_seed(config.seed, k, "sample", accelerator.process_index)
    batch = sample_prompts(setup, rewards, prompts, per_prompt, seed, accelerator)
    if extra:
        batch = _add_pretrained(training, k, batch, count, extra)
    if pool and batch is not None:
        batch = _select_from_pool(training, k, batch, queries)
    return batch


def _add_pretrained(training: Training, k: int, batch: dict | None, guided: int, extra: int) -> dict | None:
    """`batch` (the guided candidates of `guided` prompts) followed by `extra` pretrained samples, one per
    prompt, of the round's next `extra` prompts (seeded apart from the guided ones); the main process's."""
    config, accelerator = training.config, training.accelerator
    zero = ZeroReward()
    setup = SamplingSetup(
        training.adapter,
        training.featurizer,
        builders.sampler_settings(config, num_particles=1),
        config.smc.prompts_per_call,
        progress=bars_wanted(config.progress, accelerator.is_main_process),
    )
    prompts = round_prompts(training.prompts, guided + extra, config.seed, k)[guided:]
    seed = call_seed(stream_seed(config.seed, k, "sample", accelerator.process_index), 2)
    more = sample_prompts(setup, lambda call: zero, prompts, 1, seed, accelerator)
    return merge_batches([batch, more]) if batch is not None else None


def _pool_size(config, k: int, surrogate) -> int:
    """The candidates round `k` samples to choose its queries from: ``loop.initial_pool_size`` in
    round 0, ``loop.pool_size`` later (once there is a surrogate to choose by); 0: no pool."""
    if k == 0:
        return int(config.loop.initial_pool_size)
    return int(config.loop.pool_size) if surrogate is not None else 0


def _select_from_pool(training: Training, k: int, pool: dict, queries: int) -> dict:
    """The `queries` candidates of `pool` that round `k`'s rule picks (in the pool's order): round 0
    covers the pool's features (``loop.initial_selection``), later rounds take the batch acquisition
    ``loop.acquisition`` on the surrogate (:mod:`surrogate.batch_selection`). Candidates with NaN or
    inf pixels or features are left out when enough others remain. The batch's ``ess_fraction`` and
    ``log_normalizer`` stay those of the whole pool (the sampler's)."""
    from surrogate.batch_selection import cover, select_batch

    config = training.config
    generator = torch.Generator().manual_seed(call_seed(stream_seed(config.seed, k, "sample"), 1))
    finite = (~non_finite_rows(pool)).nonzero().squeeze(1)
    candidates = finite if finite.numel() >= queries else torch.arange(len(pool["prompts"]))
    features = pool["features"][candidates]
    if k == 0:
        picked = cover(features, queries, config.loop.initial_selection, generator)
    else:
        device = surrogate_device(training.surrogate)
        baseline = _observed_features(training, k) if config.loop.acquisition == "qlognei" else None
        settings = builders.batch_selection_settings(config, k)
        picked = select_batch(
            training.surrogate,
            features.to(device),
            queries,
            "qucb" if builders.exploits(config, k) else config.loop.acquisition,  # β = 0 there: the mean's top
            generator,
            baseline=baseline,
            **settings,
        )
    chosen = candidates[picked.cpu()].sort().values
    kept = dict(pool, images=pool["images"][chosen], features=pool["features"][chosen])
    kept["prompts"] = [pool["prompts"][i] for i in chosen.tolist()]
    return kept


def _observed_features(training: Training, k: int) -> torch.Tensor:
    """The usable features `(n, D)` of rounds 0..k − 1 (qLogNEI's baseline)."""
    data, _, _ = training.run.load_dataset(up_to_round=k - 1)
    return data["features"][_usable(data)].float()


def _guidance(config, k: int, featurizer, surrogate, rank: int):
    """``call -> reward`` for round `k`: the true oracle (the ceiling), or the run's acquisition on the
    surrogate (:func:`builders.build_acquisition`); an acquisition that is a random draw (Thompson) is
    made anew for every sampler call, seeded from ``(seed, k, rank, call)``; one sampler serves every
    call, each with its own reward."""
    if config.smc.guidance == "oracle":
        reward = builders.build_oracle_reward(config)
        return lambda call: reward
    if not builders.acquisition_draws(config, k):
        reward = SurrogateReward(featurizer, builders.build_acquisition(config, surrogate, k))
        return lambda call: reward
    base = stream_seed(config.seed, k, "thompson", rank)

    def draw(call: int) -> SurrogateReward:
        generator = torch.Generator().manual_seed(call_seed(base, call))
        return SurrogateReward(featurizer, builders.build_acquisition(config, surrogate, k, generator))

    return draw


def _check_finite(batch: dict, k: int) -> None:
    """A batch with NaN or inf pixels or features is never shown to the oracle."""
    bad = non_finite_rows(batch)
    if bool(bad.any()):
        raise RunError(
            f"Round {k} sampled {int(bad.sum())} of {bad.numel()} images with NaN or inf pixels or features; "
            "nothing was queried. Lower the guidance strength (raise smc.kl_coeff, lower acquisition.beta) or use "
            "model.dtype=fp32."
        )


def _query_round(training: Training, k: int, files: RoundFiles) -> None:
    """Asks the oracle about the round's unanswered items, then writes the dataset shard."""
    if files.has_shard():  # a crash after the shard was written: its rows are all there
        files.drop_batch()
        return
    config = training.config
    staged, prompts = files.load_batch()
    oracle = NoisyOracle(training.oracle, config.oracle.noise_std, stream_seed(config.seed, k, "noise"))

    def keep(answers: list[dict]) -> None:
        faults.crash_point("answered", k)
        faults.crash_point("torn", k, lambda: faults.write_torn(files.journal.path, answers, files.journal.append))
        with deferred():  # a SIGINT or SIGTERM now takes effect once these paid answers are on disk
            files.journal.append(answers)
        faults.crash_point("query", k)

    todo = files.unanswered(len(prompts))
    if todo:
        oracle.ask(staged["images"], prompts, todo, builders.query_policy(config), keep)
    files.write_shard(staged, prompts)
    faults.crash_point("shard", k)
    files.drop_batch()  # the shard now holds everything


# ---------------------------------------------------------------------------- fit and record
def _fit_round(training: Training, k: int, files: RoundFiles) -> tuple[dict | None, dict | None, dict]:
    """Scores last round's surrogate on this round's answers, fits on everything so far and
    saves the checkpoint (main), then hands the surrogate to every process. Returns the
    shard's rows, the calibration and the fit's summary (None, None, {} off the main process)."""
    shard_rows, calibration, fit_info = None, None, {}
    if training.main:
        shard_rows, _ = files.load_shard()
        calibration = _calibration(training.surrogate, shard_rows)
        surrogate, fit_info = _fit_or_keep(training, k)
        surrogate.save(files.surrogate_path)
        faults.crash_point("checkpoint", k)
        training.surrogate = surrogate.to(training.device)
    if training.accelerator.num_processes > 1:
        checkpoint = broadcast_from_main(
            files.surrogate_path.read_bytes() if training.main else None, training.accelerator
        )
        if not training.main:
            training.surrogate = _surrogate_from_bytes(checkpoint, training.device)
    return shard_rows, calibration, fit_info


def _fit_or_keep(training: Training, k: int):
    """:func:`_fit`, and what a failed fit (any error the surrogate's fit raises) leaves.

    A fit failure never makes a run impossible to resume. In round ``k > 0`` the round keeps
    the surrogate of round ``k − 1``, read again from its checkpoint (a failed warm start may
    have changed the one in memory); the run goes on, with a warning and ``fit_failed`` (the
    reason) and ``kept_surrogate_of_round`` in the round's ``surrogate_fit`` metrics, and the
    next round fits on every answer again. In round 0 there is no surrogate to keep: the run
    ends with a :class:`RunError` once the round's answers are in its dataset shard, so a
    resume asks nothing again and fits anew.
    """
    from surrogate import load_surrogate

    try:
        return _fit(training, k)
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001 - any numerical failure of a fit is handled the same way
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    run = training.run
    if k == 0 or (k - 1) not in run.complete_rounds():
        raise RunError(
            f"Round {k}'s surrogate fit failed ({reason}); every answer so far is kept in {run.path / 'data'}. "
            f"Resume the run (--config.resume_from={run.path}) to fit again, which helps when the failure was "
            "passing (e.g. out of memory); if it fails the same way, start a new run with other surrogate "
            "settings (surrogate.kind or surrogate.kwargs)."
        )
    kept = load_surrogate(
        run.round(k - 1).surrogate_path,
        expected_kind=training.config.surrogate.kind,
        expected_input_dim=training.featurizer.dim,
        device=training.device,
    )
    print(
        f"warning: round {k}'s surrogate fit failed ({reason}); round {k} keeps the surrogate of round "
        f"{kept.round} and the run goes on (the next round fits again)."
    )
    return kept, {"fit_failed": reason, "kept_surrogate_of_round": int(kept.round)}


def _usable(rows: dict) -> torch.Tensor:
    """The rows `(n,)` a fit or a calibration may use: answered (``valid``), with a reward and
    features that are finite in float32, the dtype surrogates fit in.

    The oracle's answers outside the float32 range are refused when they arrive
    (:func:`online.oracles.answer_problem`); this check keeps a shard written by an older
    version, which may hold one such as ``1e308`` (inf in float32), from wedging the run: the
    row is treated as a failed answer.
    """
    finite = torch.isfinite(rows["rewards"].float()) & torch.isfinite(rows["features"].float()).all(dim=1)
    return rows["valid"] & finite


def _fit(training: Training, k: int):
    """Fits the surrogate on every usable row of rounds 0..k (:func:`_usable`).

    Raises:
        RunError: when fewer rows are usable than the surrogate kind needs
            (``min_fit_rows``): the oracle failed on (nearly) every item.
    """
    config, previous = training.config, training.surrogate
    data, _, _ = training.run.load_dataset(up_to_round=k)
    usable = _usable(data)
    features, rewards = data["features"][usable].float(), data["rewards"][usable].float()
    needed = builders.SURROGATES.get(config.surrogate.kind).min_fit_rows
    if features.shape[0] < needed:
        raise RunError(
            f"Only {features.shape[0]} valid oracle answers so far, and the {config.surrogate.kind} surrogate needs "
            f"at least {needed}: the oracle failed on (nearly) every item (its errors are in "
            f"{training.run.answers_pattern}); fix it, then start the run again with --config.overwrite=True "
            "(a resume keeps failed answers as failed)."
        )
    warm = bool(config.surrogate.warm_start) and previous is not None and previous.kind == config.surrogate.kind
    surrogate = previous if warm else builders.build_surrogate(config, training.featurizer.dim)
    generator = torch.Generator().manual_seed(stream_seed(config.seed, k, "fit"))
    info = surrogate.fit(features, rewards, generator=generator, round=k, warm_start=warm)
    _check_predictions(surrogate, features)
    return surrogate, {key: value for key, value in (info or {}).items() if isinstance(value, (int, float, str, bool))}


def _check_predictions(surrogate, features: torch.Tensor) -> None:
    """Raises ``FloatingPointError`` when a fit that returned normally predicts a non-finite mean or
    std on its own training features `(n, D)` (e.g. rewards near the float32 limit): such a model
    must not guide the sampler or be saved; :func:`_fit_or_keep` treats it as a failed fit."""
    with torch.no_grad():
        posterior = surrogate.posterior(features.to(surrogate_device(surrogate)))
    if not (bool(torch.isfinite(posterior.mean).all()) and bool(torch.isfinite(posterior.std).all())):
        raise FloatingPointError("the fitted surrogate predicts non-finite values on its own training data")


def _calibration(surrogate, rows: dict) -> dict | None:
    """How well last round's surrogate predicted this round's answers, before seeing them:
    coverage of its 50/80/95% intervals, NLL, RMSE and rank correlation
    (:func:`surrogate.calibration_metrics`; the noise-free true rewards as ``truth``), on the
    round's usable rows (:func:`_usable`)."""
    from surrogate import calibration_metrics

    usable = _usable(rows)
    if surrogate is None or not bool(usable.any()):
        return None
    features = rows["features"][usable].float().to(surrogate_device(surrogate))
    return calibration_metrics(surrogate, features, rows["rewards"][usable], truth=rows["true_rewards"][usable])


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


def _record(training: Training, files: RoundFiles, row: dict, images: torch.Tensor) -> None:
    """The round's checkpoint records (config, RNG seeds, metrics), the run's ``metrics.jsonl``,
    the trackers, and last the ``COMPLETE`` marker."""
    config, accelerator = training.config, training.accelerator
    files.write_config(config.to_dict())
    files.write_rng(rng_record(config.seed, files.index, accelerator.num_processes))
    files.write_metrics(row)
    training.rows.append(row)
    training.run.write_metrics_lines(training.rows)
    log_round(accelerator, row, images)
    files.mark_complete()


# ---------------------------------------------------------------------------- closing stage
def _summarize(training: Training) -> None:
    """The per-round table, the reward figure and (``config.report``) the run's report."""
    config, run = training.config, training.run
    title = f"{config.run_name}: {config.oracle.kind} oracle"
    print_table(training.rows)
    plot_reward_vs_queries(training.rows, run.figure_path, title)
    if config.get("report", True):
        _write_run_report(run, title)
    print(f"Run directory: {run.path} (reward_vs_queries.png, report/report.html, metrics.jsonl, round_*/)")


def _write_run_report(run: RunDirectory, title: str) -> None:
    """The offline analysis of this one run, in ``<run_dir>/report``; a failure there never fails the run."""
    from online.analysis import write_report

    try:
        write_report([run.path], run.report_path, title)
    except Exception as error:  # noqa: BLE001 - the run's data is complete; the report is a convenience
        print(
            f"warning: the run's report could not be written ({type(error).__name__}: {error}); "
            f"run python -m online.analysis {run.path} --out DIR to retry."
        )
