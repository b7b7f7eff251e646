"""A batch of DAS samples for a set of prompts, featurized: on this process
(:func:`sample_batch`), or split across processes and gathered on the main one
(:func:`sample_prompts`, the one sampling routine of training and evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from das.smc import DASSampler, DASSettings
from online.distributed import gather_to_main, shard


def sample_batch(
    sampler: DASSampler,
    reward_for_call: Callable[[int], object],
    featurizer,
    prompts: list[str],
    images_per_prompt: int,
    prompts_per_call: int,
    generator: torch.Generator,
    progress: bool = False,
) -> dict:
    """Samples every prompt with DAS and keeps the `images_per_prompt` heaviest particles.

    The prompts go to the sampler `prompts_per_call` at a time; call ``i`` uses the reward
    ``reward_for_call(i)`` (the same reward each time, or a fresh Thompson draw per call),
    all with the one `sampler`.

    Returns:
        A dict with ``images`` `(n, C, H, W)` float in [0, 1] on the CPU, ``features``
        `(n, D)`, ``prompts`` (n strings), ``ess`` and ``log_normalizer`` per prompt.
    """
    images, features, kept_prompts, ess, log_z = [], [], [], [], []
    chunks = range(0, len(prompts), prompts_per_call)
    for call, start in enumerate(tqdm(chunks, desc="sampling", disable=not progress or len(chunks) == 1, leave=False)):
        chunk = prompts[start : start + prompts_per_call]
        result = sampler.sample(chunk, reward_for_call(call), generator)
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


@dataclass
class SamplingSetup:
    """What sampling a batch takes besides the prompts, the reward and the seed.

    Attributes:
        adapter: the denoiser adapter.
        featurizer: ``images -> (N, D)`` features.
        settings: the sampler's :class:`das.DASSettings`.
        prompts_per_call: prompts per sampler call.
        progress: show progress bars.
    """

    adapter: object
    featurizer: object
    settings: DASSettings
    prompts_per_call: int
    progress: bool = False

    def build_sampler(self) -> DASSampler:
        """The one sampler of a batch, whatever reward each of its calls takes."""
        return DASSampler(self.adapter, replace(self.settings, progress=self.progress))


def sample_prompts(
    setup: SamplingSetup,
    reward_for_call: Callable[[int], object],
    prompts: list[str],
    per_prompt: int,
    seed: int,
    accelerator,
) -> dict | None:
    """Samples `prompts` across the processes, keeping `per_prompt` images of each; the merged
    batch on the main process, None elsewhere.

    Each process takes its contiguous share of the prompts (:func:`online.distributed.shard`)
    and samples it with :func:`sample_batch` from a generator on its device seeded with `seed`
    (a per-rank seed, :func:`online.seeds.stream_seed`).
    """
    mine = shard(prompts, accelerator)
    generator = torch.Generator(device=accelerator.device).manual_seed(seed)
    part = None
    if mine:
        part = sample_batch(
            setup.build_sampler(),
            reward_for_call,
            setup.featurizer,
            mine,
            per_prompt,
            setup.prompts_per_call,
            generator,
            progress=setup.progress,
        )
    parts = gather_to_main(part, accelerator)
    return merge_batches([p for p in parts if p is not None]) if parts is not None else None


def non_finite_rows(batch: dict) -> torch.Tensor:
    """`(n,)` bool: the rows of a batch with NaN or inf pixels or features (never shown to an oracle)."""
    return ~torch.isfinite(batch["images"]).flatten(1).all(1) | ~torch.isfinite(batch["features"]).all(1)
