"""Evaluate mode: DAS guided by a round's surrogate mean, scored by the true oracle.

Stages: open the directory → load the models and the checkpoint → create the directory →
sample the evaluation prompts → ask the oracle (no label noise) → write images, grid and
``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from das.images import image_grid, to_uint8
from online import builders
from online.errors import RunError
from online.guidance import SurrogateReward
from online.metrics import evaluation_metrics
from online.oracles import query_with_retries
from online.run_directory import RunDirectory
from online.sampling import SamplingSetup, non_finite_rows, sample_prompts
from online.seeds import stream_seed
from online.validation import surrogate_path


def run_evaluation(config, accelerator) -> Path:
    """Samples the evaluation prompts and writes images, a grid PNG and ``metrics.json``.

    The config is validated first; the evaluation directory is created (or, with
    ``overwrite``, an earlier evaluation there is emptied) only after the models and the
    checkpoint have loaded, and it is locked while the evaluation runs.
    """
    with RunDirectory.opened(config, accelerator) as run:
        return _evaluate(config, accelerator, run)


def _evaluate(config, accelerator, run: RunDirectory) -> Path:
    main = accelerator.is_main_process
    adapter = builders.build_adapter(config, accelerator.device)
    featurizer = builders.build_featurizer(config, accelerator.device)
    checkpoint = surrogate_path(Path(config.reward_model_path))
    surrogate = _load_checkpoint(config, checkpoint, featurizer.dim, accelerator.device)
    if main:
        run.create(config.overwrite, config.to_dict())
    accelerator.wait_for_everyone()
    prompts = _evaluation_prompts(config)
    reward = SurrogateReward(featurizer, surrogate, mode="mean")
    setup = SamplingSetup(
        adapter,
        featurizer,
        builders.sampler_kwargs(config),
        config.smc.prompts_per_call,
        progress=config.progress and main,
    )
    seed = stream_seed(config.seed, 0, "evaluate", accelerator.process_index)
    batch = sample_prompts(setup, lambda call: reward, prompts, config.evaluate.images_per_prompt, seed, accelerator)
    if not main:
        return run.path
    if bool(non_finite_rows(batch).any()):
        raise RunError(
            "The evaluation batch holds NaN or inf pixels or features; nothing was queried. Check the checkpoint."
        )
    true = _true_rewards(config, batch)
    with torch.no_grad():
        predicted = surrogate.mean(batch["features"].to(accelerator.device)).double().cpu()
    pixels = to_uint8(batch["images"])
    grid = image_grid(pixels, columns=config.evaluate.images_per_prompt * min(len(prompts), 8))
    metrics = evaluation_metrics(batch, true, predicted, checkpoint, config.oracle.kind, run.image_name)
    run.write_evaluation(pixels, grid, metrics)
    _print_summary(config, checkpoint, metrics, run.path)
    return run.path


def _load_checkpoint(config, checkpoint: Path, feature_dim: int, device):
    from surrogate import load_surrogate

    return load_surrogate(
        checkpoint, expected_kind=config.surrogate.kind, expected_input_dim=feature_dim, device=device
    )


def _evaluation_prompts(config) -> list[str]:
    """The evaluation prompts (the first ``evaluate.num_prompts`` when set)."""
    prompts = builders.read_prompts(config.prompts.eval_file)
    return prompts[: config.evaluate.num_prompts] if config.evaluate.num_prompts else prompts


def _true_rewards(config, batch: dict) -> torch.Tensor:
    """The true oracle's answer for every image `(n,)` float64, NaN where it failed."""
    oracle = builders.build_oracle(config)
    true = torch.full((len(batch["prompts"]),), float("nan"), dtype=torch.float64)

    def keep(answers: list[dict]) -> None:
        for row in answers:
            if row["value"] is not None:
                true[row["index"]] = row["value"]

    indices = range(len(batch["prompts"]))
    query_with_retries(oracle, batch["images"], batch["prompts"], indices, builders.query_policy(config), keep)
    return true


def _print_summary(config, checkpoint: Path, metrics: dict, out: Path) -> None:
    true = metrics["true_reward"]
    print(
        f"Evaluation of {checkpoint}: true {config.oracle.kind} reward {true['mean']:.4f} ± {true['std']:.4f} "
        f"over {metrics['num_images']} images, diversity {metrics['diversity']:.4f}"
    )
    print(f"Wrote {out}/metrics.json, grid.png and images/.")
