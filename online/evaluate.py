"""Evaluate mode: DAS guided by a round's surrogate mean, scored by the true oracle; with
``smc.guidance="none"``, the pretrained reference on the same prompts (the pretrained chain,
``evaluate.images_per_prompt`` draws per prompt), to compare the first against.

Stages, in this order: read the evaluation prompts → load the models, the checkpoint and
the oracle → create the evaluation directory (with ``overwrite``, replace an earlier
evaluation there), or, resuming, check its files under its lock → sample the batch and stage
it on disk (unless a resumed evaluation staged it already) → ask the oracle (no label noise)
about every item without a journaled answer, each answer fsynced to ``answers.jsonl`` as it
arrives → write the images, the grid and, last, ``metrics.json``.

A mistake found before the directory is created (a prompt file that is empty, missing or not
UTF-8; a model or checkpoint that does not load) costs nothing: no file is created or
removed, no query is paid. An evaluation interrupted later (a full disk, a kill) is resumed
with ``--config.resume_from=<its directory>`` alone (its own config.json,
:func:`online.validation.resume_config`): the staged batch is reused and only the items
without a journaled answer are asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from das.images import image_grid, to_uint8
from dasapp.stopping import deferred
from online import builders
from online.distributed import broadcast_from_main
from online.errors import RunError
from online.guidance import SurrogateReward, ZeroReward
from online.metrics import evaluation_metrics
from online.oracles import query_with_retries
from online.progress import bars_wanted
from online.run_directory import RunDirectory
from online.sampling import SamplingSetup, non_finite_rows, sample_prompts
from online.seeds import stream_seed
from online.validation import prepared_config, surrogate_path


@dataclass
class Evaluation:
    """What the stages of an evaluation share: the config, the process, the directory, the
    prompts and the models (the oracle on the main process only)."""

    config: object
    accelerator: object
    run: RunDirectory
    prompts: list[str]
    adapter: object
    featurizer: object
    checkpoint: Path
    surrogate: object
    oracle: object
    started: bool = False  # the directory is this evaluation's (created, or resumed and checked)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def run_evaluation(config, accelerator, overrides: dict | None = None) -> Path:
    """Samples the evaluation prompts and writes images, a grid PNG and ``metrics.json``.

    The config is validated first; the evaluation directory is created (or, with
    ``overwrite``, an earlier evaluation there is replaced) only after the prompts have been
    read and the models, the checkpoint and the oracle have loaded, and it is locked while the
    evaluation runs. With ``resume_from`` (an evaluation directory) the evaluation there is
    continued with its own config; `overrides` are the fields given explicitly on the command
    line (see :func:`online.validation.resume_config`).

    Raises:
        RunError: the oracle answered no item (the files are written, the journal kept), or a
            filesystem error while running (the message names the resume command).
    """
    config = prepared_config(config, overrides)  # pure; every process, before the main one creates anything
    return evaluate(config, accelerator)


def evaluate(config, accelerator) -> Path:
    """:func:`run_evaluation` for a config already resumed and validated on every process (the
    command line does both before it builds the ``Accelerator``); returns the evaluation dir."""
    accelerator.wait_for_everyone()
    with RunDirectory.opened(config, accelerator) as run:
        return _evaluate(config, accelerator, run)


def _evaluate(config, accelerator, run: RunDirectory) -> Path:
    """Load → prepare the directory and the staged batch → ask → write; then the summary."""
    evaluation = None
    try:
        evaluation = _load(config, accelerator, run)
        staged = _prepare(evaluation)
        if not evaluation.main:
            return run.path
        answers = _ask(evaluation, staged)
        metrics = _write(evaluation, staged, answers)
    except OSError as error:
        started = run.resuming or (evaluation is not None and evaluation.started)
        raise RunError(_describe_os_error(error, run, started)) from None
    _print_summary(config, evaluation.checkpoint, metrics, run.path)
    if metrics["answered"] == 0:
        raise RunError(
            f"The oracle answered none of the {metrics['num_images']} evaluation images (their errors are in "
            f"{run.evaluation_journal.path}; metrics.json records them as failed); fix the oracle, then evaluate "
            "again with --config.overwrite=True (a resume keeps failed answers as failed)."
        )
    return run.path


# ---------------------------------------------------------------------------- before the directory exists
def _load(config, accelerator, run: RunDirectory) -> Evaluation:
    """The prompts first (a bad prompt file must cost nothing), then the models, the
    checkpoint and (main process) the oracle."""
    prompts = _evaluation_prompts(config)
    device = accelerator.device
    adapter = builders.build_adapter(config, device)
    featurizer = builders.build_featurizer(config, device)
    checkpoint = surrogate_path(Path(config.reward_model_path))
    surrogate = _load_checkpoint(config, checkpoint, featurizer.dim, device)
    oracle = builders.build_oracle(config) if accelerator.is_main_process else None
    return Evaluation(config, accelerator, run, prompts, adapter, featurizer, checkpoint, surrogate, oracle)


def _evaluation_prompts(config) -> list[str]:
    """The evaluation prompts (the first ``evaluate.num_prompts`` when set); a prompt file that
    is missing, empty or not UTF-8 text (it may have changed since validation) is a one-line
    :class:`dasapp.config_checks.ConfigError` (:func:`dasapp.factory.read_prompts`)."""
    prompts = builders.read_prompts(config.prompts.eval_file)
    return prompts[: config.evaluate.num_prompts] if config.evaluate.num_prompts else prompts


def _load_checkpoint(config, checkpoint: Path, feature_dim: int, device):
    from surrogate import load_surrogate

    return load_surrogate(
        checkpoint, expected_kind=config.surrogate.kind, expected_input_dim=feature_dim, device=device
    )


# ---------------------------------------------------------------------------- the directory and the batch
def _prepare(evaluation: Evaluation) -> dict | None:
    """Creates the directory (or checks a resumed one), samples and stages the batch unless it
    is staged already; returns the staged batch on the main process (None elsewhere)."""
    config, run, accelerator = evaluation.config, evaluation.run, evaluation.accelerator
    staged = False
    if evaluation.main:
        if run.resuming:
            staged = run.verify_evaluation_for_resume(evaluation.featurizer.dim)
            print(f"Resuming the evaluation in {run.path} ({'batch staged' if staged else 'sampling again'}).")
        else:
            run.create(config.overwrite, config.to_dict())
    evaluation.started = True
    accelerator.wait_for_everyone()
    if broadcast_from_main(not staged, accelerator):
        _sample_and_stage(evaluation)
    accelerator.wait_for_everyone()
    return run.load_evaluation_batch() if evaluation.main else None


def _sample_and_stage(evaluation: Evaluation) -> None:
    """Samples the prompts across the processes; the main one stages the batch with the
    surrogate's means, before the oracle sees any of it."""
    config, accelerator = evaluation.config, evaluation.accelerator
    prompts, per_prompt, reward, settings = _sampling_plan(evaluation)
    setup = SamplingSetup(
        evaluation.adapter,
        evaluation.featurizer,
        settings,
        config.smc.prompts_per_call,
        progress=bars_wanted(config.progress, evaluation.main),
    )
    seed = stream_seed(config.seed, 0, "evaluate", accelerator.process_index)
    batch = sample_prompts(setup, lambda call: reward, prompts, per_prompt, seed, accelerator)
    if not evaluation.main:
        return
    _check_finite(batch)
    with torch.no_grad():
        predicted = evaluation.surrogate.mean(batch["features"].to(accelerator.device)).double().cpu()
    evaluation.run.stage_evaluation(batch, predicted)


def _sampling_plan(evaluation: Evaluation):
    """``(prompts, per_prompt, reward, settings)`` of the evaluation batch: DAS guided by the surrogate's
    mean, or with ``smc.guidance="none"`` the pretrained reference: the pretrained chain (one particle,
    no reward) drawn ``evaluate.images_per_prompt`` times per prompt, in the same prompt-major order."""
    from surrogate import PosteriorMean

    config = evaluation.config
    per_prompt = config.evaluate.images_per_prompt
    if config.smc.guidance == "none":
        prompts = [prompt for prompt in evaluation.prompts for _ in range(per_prompt)]
        return prompts, 1, ZeroReward(), builders.sampler_settings(config, num_particles=1)
    reward = SurrogateReward(evaluation.featurizer, PosteriorMean(evaluation.surrogate))
    return evaluation.prompts, per_prompt, reward, builders.sampler_settings(config)


def _check_finite(batch: dict) -> None:
    """A batch with NaN or inf pixels or features is never shown to the oracle."""
    if bool(non_finite_rows(batch).any()):
        raise RunError(
            "The evaluation batch holds NaN or inf pixels or features; nothing was queried. Check the checkpoint."
        )


# ---------------------------------------------------------------------------- answers and files
def _ask(evaluation: Evaluation, staged: dict) -> dict[int, dict]:
    """Asks the oracle about the staged items without a journaled answer, journaling each
    answer as it arrives; returns every journaled answer (item index -> row)."""
    journal = evaluation.run.evaluation_journal
    answered = journal.read()
    todo = [i for i in range(len(staged["prompts"])) if i not in answered]
    if todo:
        _check_finite(staged)

        def keep(rows: list[dict]) -> None:
            with deferred():  # an answer that arrived is saved before a stop takes effect
                journal.append([{**row, "true_reward": row["value"]} for row in rows])

        policy = builders.query_policy(evaluation.config)
        query_with_retries(evaluation.oracle, staged["images"], staged["prompts"], todo, policy, keep)
    return journal.read()


def _write(evaluation: Evaluation, staged: dict, answers: dict[int, dict]) -> dict:
    """The images, their grid and, last, ``metrics.json``; returns the metrics."""
    config, run = evaluation.config, evaluation.run
    pixels = to_uint8(staged["images"])
    per_prompt = config.evaluate.images_per_prompt
    grid = image_grid(pixels, columns=per_prompt * min(max(len(staged["prompts"]) // per_prompt, 1), 8))
    metrics = evaluation_metrics(staged, answers, evaluation.checkpoint, config.oracle.kind, run.image_name)
    run.write_evaluation(pixels, grid, metrics)
    return metrics


def _describe_os_error(error: OSError, run: RunDirectory, started: bool) -> str:
    """One line for a filesystem error while evaluating, with what to do next: the resume
    command once the directory is this evaluation's, else the same command again."""
    what = error.strerror or type(error).__name__
    target = f" ({error.filename})" if error.filename is not None else ""
    if not started:
        return f"{what}{target}; nothing was asked yet: fix the path or free the space, then run it again."
    return (
        f"{what}{target}; every answer already paid for is kept in {run.evaluation_journal.path}: free the space "
        f"or fix the path, then resume the evaluation with python online/online_main_smc.py "
        f"--config.resume_from={run.path}."
    )


def _print_summary(config, checkpoint: Path, metrics: dict, out: Path) -> None:
    true, diversity = metrics["true_reward"], metrics["diversity"]
    score = "none" if true["mean"] is None else f"{true['mean']:.4f} ± {true['std']:.4f}"
    print(
        f"Evaluation of {checkpoint}: true {config.oracle.kind} reward {score} over {metrics['answered']} of "
        f"{metrics['num_images']} images ({metrics['failed_queries']} failed), diversity "
        f"{'none' if diversity is None else f'{diversity:.4f}'}"
    )
    print(f"Wrote {out}/metrics.json, grid.png and images/.")
