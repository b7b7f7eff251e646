"""Offline DAS sampling from a config (the library behind ``python -m das``).

:func:`validate` checks a run configuration before any model loads or any directory is
created; :func:`run` samples every prompt with DAS (or the realigned chain, see
:mod:`dasapp.realign_sweep`) and writes the run directory:

    <output_dir>/<run_name>/
      config.json     the resolved configuration
      images/         the selected image per prompt, ``0000.png`` ...
      particles/      every particle, ``0000_k0.png`` ...
      rewards.json    rewards per image (particle) and per prompt
      traces.json     ESS, λ, resampling and reward traces, log-normalizer, per prompt
      grid.png        the selected images in a grid

Under ``accelerate launch`` prompts are split across processes and results gathered on the
main process, which alone writes the run directory.

One writer per run name: the main process holds ``<output_dir>/.<run_name>.lock``
(:func:`dasapp.run_dirs.lock_run_name`) from before any model loads until the outputs are in
place; a second run of the same name stops with one line. Under the lock, the temporary
folders a killed run of this name left are removed, and the run directory is checked again
right before the swap, so an output is never replaced without ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from das.images import image_grid, save_png, to_uint8
from dasapp.config_checks import ConfigError, check_flag, check_number, check_shared_sections
from dasapp.factory import (
    build_adapter,
    build_reward,
    check_prompt_source,
    check_reward_section,
    make_das,
    read_prompts,
)
from dasapp.realign_sweep import PlainSampler, build_realign_pair, realign_enabled, run_sweep, validate_realign
from dasapp.run_dirs import (
    DAS_SAMPLE_KIND,
    RunDirError,
    RunPlace,
    clean_run_leftovers,
    lock_run_name,
    write_run_directory,
)
from dasapp.weights import check_weights


def validate(config) -> None:
    """Checks a run configuration before anything expensive; raises :class:`ConfigError`."""
    check_shared_sections(config)
    if realign_enabled(config):
        validate_realign(config)
    check_weights(config)  # every model and weight file on this machine, or one message listing the missing
    check_reward_section(config.reward)
    check_number(config.num_prompts, "num_prompts (0: all)", integer=True, minimum=0)
    check_number(config.batch_prompts, "batch_prompts", integer=True, minimum=1)
    check_flag(config.overwrite, "overwrite")
    check_prompt_source(  # read and decoded in full: an empty or non-UTF-8 file stops here
        config.prompt_file,
        "does not exist; set prompt_file to a text file with one prompt per line.",
        field="prompt_file",
    )
    try:
        run_place(config).check(config.overwrite)
    except RunDirError as error:
        raise ConfigError(str(error)) from None


def run_place(config) -> RunPlace:
    """The run directory ``<output_dir>/<run_name>``: any existing one (even empty) needs ``overwrite``."""
    return RunPlace(config.output_dir, config.run_name, DAS_SAMPLE_KIND, example="runs/das", reuse_empty=False)


def sample_prompts(sampler_and_reward, prompts: Sequence[str], batch: int, seed: int, offset: int) -> list[dict]:
    """Runs the sampler over `prompts` in batches towards its reward (:func:`build_sampler`'s pair); one record per
    prompt (CPU/numpy only)."""
    sampler, reward = sampler_and_reward
    records = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        generator = torch.Generator(device=sampler.adapter.device).manual_seed(seed + offset + start)
        result = sampler.sample(chunk, reward, generator)
        selected = result.selected_index
        for b, prompt in enumerate(chunk):
            records.append(
                {
                    "index": offset + start + b,
                    "prompt": prompt,
                    "particles": to_uint8(result.images[b]),
                    "selected": to_uint8(result.selected[b]) if selected.dim() == 1 else None,
                    "selected_index": selected[b].tolist(),
                    "rewards": result.rewards[b].tolist(),
                    "weights": result.weights[b].tolist(),
                    "ess": result.ess[:, b].tolist(),
                    "lam": result.lam[:, b].tolist(),
                    "resampled": result.resampled[:, b].tolist(),
                    "reward_trace": result.trace.reward[:, b].tolist(),
                    "log_normalizer": float(result.log_normalizer[b]),
                }
            )
    return records


def write_outputs(run_dir: Path, config, records: list[dict]) -> None:
    """Writes the run directory atomically (a temporary sibling renamed into place, the place checked again first)."""
    records = sorted(records, key=lambda r: r["index"])
    write_run_directory(
        run_dir, lambda tmp: _write_files(tmp, config, records), DAS_SAMPLE_KIND, overwrite=bool(config.overwrite)
    )


def _write_files(tmp: Path, config, records: list[dict]) -> None:
    (tmp / "images").mkdir()
    (tmp / "particles").mkdir()
    per_image, per_prompt, traces, chosen = [], [], [], []
    for r in records:
        i = r["index"]
        for k, particle in enumerate(r["particles"]):
            name = f"particles/{i:04d}_k{k}.png"
            save_png(particle, tmp / name)
            per_image.append(
                {
                    "prompt_index": i,
                    "prompt": r["prompt"],
                    "particle": k,
                    "file": name,
                    "reward": r["rewards"][k],
                    "weight": r["weights"][k],
                }
            )
        sel = r["selected_index"] if isinstance(r["selected_index"], int) else int(np.argmax(r["weights"]))
        image = r["selected"] if r["selected"] is not None else r["particles"][sel]
        save_png(image, tmp / f"images/{i:04d}.png")
        chosen.append(image)
        per_prompt.append(
            {
                "prompt_index": i,
                "prompt": r["prompt"],
                "file": f"images/{i:04d}.png",
                "selected_particle": sel,
                "selected_reward": r["rewards"][sel],
                "mean_reward": float(np.mean(r["rewards"])),
                "weighted_reward": float(np.dot(r["weights"], r["rewards"])),
                "max_reward": max(r["rewards"]),
            }
        )
        traces.append(
            {
                "prompt_index": i,
                "prompt": r["prompt"],
                "ess": r["ess"],
                "lam": r["lam"],
                "resampled": r["resampled"],
                "reward_trace": r["reward_trace"],
                "log_normalizer": r["log_normalizer"],
            }
        )
    summary = {
        "num_prompts": len(per_prompt),
        "mean_selected_reward": float(np.mean([p["selected_reward"] for p in per_prompt])),
    }
    (tmp / "rewards.json").write_text(
        json.dumps({"summary": summary, "per_prompt": per_prompt, "per_image": per_image}, indent=1)
    )
    (tmp / "traces.json").write_text(json.dumps({"num_particles": config.smc.num_particles, "per_prompt": traces}))
    (tmp / "config.json").write_text(config.to_json_best_effort(indent=1))
    save_png(image_grid(np.stack(chosen)), tmp / "grid.png")


def run(config) -> Path:
    """Validates `config`, takes the run name's lock, samples every prompt with DAS, writes the run directory.

    Returns:
        The run directory ``<output_dir>/<run_name>``.

    Raises:
        ConfigError: a bad configuration or prompt file, before anything is created.
        RunDirError: another run of this name is running, or its directory appeared meanwhile.
    """
    from accelerate import PartialState

    validate(config)
    prompts = read_prompts(config.prompt_file, config.num_prompts)
    state = PartialState(cpu=config.device == "cpu")
    with claim_run(config, state):
        return _sample_and_write(config, state, prompts)


@contextlib.contextmanager
def claim_run(config, state) -> Iterator[None]:
    """Holds the run name's lock (:func:`dasapp.run_dirs.lock_run_name`) on the main process for the whole run.

    Under the lock, before any model loads, the folders a killed run of this name left are
    tidied (:func:`dasapp.run_dirs.clean_run_leftovers`) and the run directory is checked again, so
    a run started second stops here (``RunDirError``, on every process) instead of replacing
    the first one's outputs.
    """
    lock, error = None, None
    if state.is_main_process:
        try:
            lock = lock_run_name(config.output_dir, config.run_name)
            clean_run_leftovers(run_place(config).path, DAS_SAMPLE_KIND)
            run_place(config).check(config.overwrite)
        except RunDirError as caught:
            error = str(caught)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    try:
        if error is not None:
            raise RunDirError(error)
        yield
    finally:
        if lock is not None:
            lock.release()


def _sample_and_write(config, state, prompts: Sequence[str]) -> Path:
    """Builds the models, samples every prompt (or the λ sweep) and writes the run directory on the main process."""
    device = config.device or str(state.device)
    torch.manual_seed(config.seed)
    reward = build_reward(config.reward, device)
    run_dir = run_place(config).path
    if realign_enabled(config) and config.realign.sweep:
        reference, aligned = build_realign_pair(config, device)
        if state.is_main_process:
            run_sweep(config, reference, aligned, reward, prompts, run_dir)
        state.wait_for_everyone()
        return run_dir
    sampler = build_sampler(config, reward, device, state.is_main_process)
    records = _sample_on_every_process(state, sampler, prompts, config)
    if state.is_main_process:
        write_outputs(run_dir, config, records)
    state.wait_for_everyone()
    return run_dir


def build_sampler(config, reward, device: str, progress: bool) -> tuple:
    """The run's sampler and `reward`, the pair :func:`sample_prompts` takes.

    DAS on ``model.path``; with ``realign.enabled`` the realigned chain, sampled plainly or as DAS's proposal.
    """
    if not realign_enabled(config):
        return make_das(build_adapter(config.model, device), config.smc, progress), reward
    from das.adapters.realigned import RealignedAdapter

    reference, aligned = build_realign_pair(config, device)
    adapter = RealignedAdapter(reference, aligned, config.realign.lam)
    if config.realign.smc:  # DAS towards p_ref·exp(r/smc.kl_coeff), the realigned chain as its proposal
        return make_das(reference, config.smc, progress, proposal_adapter=adapter), reward
    return PlainSampler(adapter, config.smc.num_particles), reward


def _sample_on_every_process(state, sampler, prompts: Sequence[str], config) -> list[dict]:
    """Each process samples its share of the prompts; every record, gathered on every process."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(prompts)))) as local:
        local = list(local)
        records = (
            sample_prompts(
                sampler, [prompts[i] for i in local], config.batch_prompts, config.seed, local[0] if local else 0
            )
            if local
            else []
        )
    return gather_object(records) if state.num_processes > 1 else records
