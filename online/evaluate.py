"""Evaluate mode: DAS guided by a round's surrogate mean, scored by the true oracle."""

from __future__ import annotations

from pathlib import Path

import torch

from das.images import image_grid, save_png, to_uint8
from online import builders
from online.distributed import gather_to_main, shard
from online.errors import RunError
from online.guidance import SurrogateReward
from online.metrics import diversity, summary
from online.oracles import query_with_retries
from online.run_directory import RunDirectory
from online.sampling import merge_batches, sample_batch
from online.storage import atomic_write_json
from online.validation import surrogate_path

EVAL_STREAM_SEED = 7_777


def run_evaluation(config, accelerator) -> Path:
    """Samples the evaluation prompts and writes images, a grid PNG and ``metrics.json``.

    The config is validated first; the evaluation directory is created (or, with
    ``overwrite``, an earlier evaluation there is emptied) only after the models and the
    checkpoint have loaded, and it is locked while the evaluation runs.
    """
    with RunDirectory.opened(config, accelerator) as run:
        return _evaluate(config, accelerator, run)


def _evaluate(config, accelerator, run: RunDirectory) -> Path:
    from surrogate import load_surrogate

    main = accelerator.is_main_process
    device = accelerator.device
    out = run.path
    adapter = builders.build_adapter(config, device)
    featurizer = builders.build_featurizer(config, device)
    checkpoint = surrogate_path(Path(config.reward_model_path))
    surrogate = load_surrogate(
        checkpoint, expected_kind=config.surrogate.kind, expected_input_dim=featurizer.dim, device=device
    )
    if main:
        run.create(config.overwrite, config.to_dict())
        (out / "images").mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    prompts = builders.read_prompts(config.prompts.eval_file)
    if config.evaluate.num_prompts:
        prompts = prompts[: config.evaluate.num_prompts]
    mine = shard(prompts, accelerator)
    generator = torch.Generator(device=device).manual_seed(
        config.seed * 1_000_003 + EVAL_STREAM_SEED + accelerator.process_index
    )
    reward = SurrogateReward(featurizer, surrogate, mode="mean")
    part = (
        sample_batch(
            adapter,
            lambda call: reward,
            featurizer,
            mine,
            config.evaluate.images_per_prompt,
            builders.sampler_kwargs(config),
            config.smc.prompts_per_call,
            generator,
            progress=config.progress and main,
        )
        if mine
        else None
    )
    parts = gather_to_main(part, accelerator)
    if not main:
        return out
    batch = merge_batches([p for p in parts if p is not None])
    if not (torch.isfinite(batch["images"]).all() and torch.isfinite(batch["features"]).all()):
        raise RunError(
            "The evaluation batch holds NaN or inf pixels or features; nothing was queried. Check the checkpoint."
        )
    oracle = builders.build_oracle(config)
    true = torch.full((len(batch["prompts"]),), float("nan"), dtype=torch.float64)

    def keep(answers: list[dict]) -> None:
        for row in answers:
            if row["value"] is not None:
                true[row["index"]] = row["value"]

    query_with_retries(
        oracle, batch["images"], batch["prompts"], range(len(batch["prompts"])), builders.query_policy(config), keep
    )
    with torch.no_grad():
        predicted = surrogate.mean(batch["features"].to(device)).double().cpu()
    pixels = to_uint8(batch["images"])
    for i, image in enumerate(pixels):
        save_png(image, out / "images" / f"{i:04d}.png")
    save_png(image_grid(pixels, columns=config.evaluate.images_per_prompt * min(len(prompts), 8)), out / "grid.png")
    per_prompt: dict[str, list[float]] = {}
    for prompt, value in zip(batch["prompts"], true.tolist()):
        per_prompt.setdefault(prompt, []).append(value)
    metrics = {
        "checkpoint": str(checkpoint),
        "oracle": config.oracle.kind,
        "num_images": len(batch["prompts"]),
        "failed_queries": int(torch.isnan(true).sum()),
        "true_reward": summary(true),
        "surrogate_mean": summary(predicted),
        "diversity": diversity(batch["features"]),
        "ess_fraction": float(batch["ess_fraction"].mean()),
        "per_prompt_mean": {p: sum(v) / len(v) for p, v in per_prompt.items()},
        "images": [
            {"file": f"images/{i:04d}.png", "prompt": p, "true_reward": t}
            for i, (p, t) in enumerate(zip(batch["prompts"], true.tolist()))
        ],
    }
    atomic_write_json(out / "metrics.json", metrics)
    print(
        f"Evaluation of {checkpoint}: true {config.oracle.kind} reward {metrics['true_reward']['mean']:.4f} ± "
        f"{metrics['true_reward']['std']:.4f} over {metrics['num_images']} images, diversity {metrics['diversity']:.4f}"
    )
    print(f"Wrote {out}/metrics.json, grid.png and images/.")
    return out
