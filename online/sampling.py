"""One round's batch: DAS samples for a set of prompts, featurized, on this process."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from das.smc import DASSampler


def sample_batch(
    adapter,
    reward_for_call: Callable[[int], object],
    featurizer,
    prompts: list[str],
    images_per_prompt: int,
    sampler_kwargs: dict,
    prompts_per_call: int,
    generator: torch.Generator,
    progress: bool = False,
) -> dict:
    """Samples every prompt with DAS and keeps the `images_per_prompt` heaviest particles.

    The prompts go to the sampler `prompts_per_call` at a time; call ``i`` uses the reward
    ``reward_for_call(i)`` (the same reward each time, or a fresh Thompson draw per call).

    Returns:
        A dict with ``images`` `(n, C, H, W)` float in [0, 1] on the CPU, ``features``
        `(n, D)`, ``prompts`` (n strings), ``ess`` and ``log_normalizer`` per prompt.
    """
    images, features, kept_prompts, ess, log_z = [], [], [], [], []
    chunks = range(0, len(prompts), prompts_per_call)
    for call, start in enumerate(tqdm(chunks, desc="sampling", disable=not progress or len(chunks) == 1, leave=False)):
        sampler = DASSampler(adapter, reward_for_call(call), progress=progress, **sampler_kwargs)
        chunk = prompts[start : start + prompts_per_call]
        result = sampler.sample(chunk, generator)
        order = result.log_weights.argsort(dim=-1, descending=True)[:, :images_per_prompt]
        picked = result.images[torch.arange(len(chunk)).unsqueeze(-1), order].flatten(0, 1)
        with torch.no_grad():
            features.append(featurizer(picked).float().cpu())
        images.append(picked.float().cpu())
        kept_prompts.extend(p for p in chunk for _ in range(images_per_prompt))
        ess.append(result.ess[-1].float().cpu() / sampler.num_particles)
        log_z.append(result.log_normalizer.float().cpu())
    return {
        "images": torch.cat(images),
        "features": torch.cat(features),
        "prompts": kept_prompts,
        "ess_fraction": torch.cat(ess),
        "log_normalizer": torch.cat(log_z),
    }


def merge_batches(parts: list[dict]) -> dict:
    """Concatenates per-process batches in rank order."""
    merged = {
        key: torch.cat([p[key] for p in parts]) for key in ("images", "features", "ess_fraction", "log_normalizer")
    }
    merged["prompts"] = [prompt for p in parts for prompt in p["prompts"]]
    return merged
