"""Offline DAS sampling from a config file: ``python -m das --config config/sd.py:aesthetic``.

Also runs under ``accelerate launch -m das ...``: prompts are split across processes and
results gathered on the main process, which alone writes the run directory (the selected
image per prompt, every particle, rewards, traces and a grid; see :mod:`dasapp.offline`).

With ``realign.enabled`` (the ``realign`` variants), the model is DeRaDiff's realigned chain
of ``model.path`` and ``realign.aligned`` at ``realign.lam`` (docs/realign.md): plain samples
of it (``smc.num_particles`` per prompt), or, with ``realign.smc``, DAS towards
``p_ref · exp(r/smc.kl_coeff)`` with the realigned chain as its proposal (exact weights;
closest to the target with ``smc.kl_coeff = α/λ``). With
``realign.sweep`` (a λ list) the run directory holds ``realign_sweep.png`` (a column per λ),
``realign_sweep.json`` and ``realign_sweep.md`` instead: per λ the mean reward, diversity and
a cross-reward, beside DAS on ``model.path`` at the equivalent α/λ.

The configuration (prompt file included, read in full) is validated before any model is
loaded; errors a user can cause print one line and exit non-zero. One run per run name at a
time: a second one stops with one line and exit status 2 (see :func:`dasapp.offline.claim_run`).
This module only reads the command line and prints; the work is done by :mod:`dasapp.offline`
(validation, sampling, the run directory) and :mod:`dasapp.realign_sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

EXAMPLE = "config/sd.py:aesthetic"
HELP = """usage: python -m das --config config/<MODEL>.py:<VARIANT> [--config.<field>=<value> ...]

Samples every prompt of a prompt file with DAS (SMC over the denoising chain) towards
p_pre(x)·exp(r(x)/α) and writes the chosen image per prompt, every particle, rewards and traces.

Config files and variants:
  config/sd.py     Stable Diffusion 1.5: aesthetic, pick, clip, multi, jpeg, realign;
                   world, realign_world (the embedded world's 32×32 model: CPU, no download)
  config/sdxl.py   SDXL (the same variants but world, realign_world)
  config/lcm.py    Latent Consistency Model (the same variants but world, realign_world)

Main fields (override with --config.<field>=<value>):
  run_name, output_dir, overwrite   the outputs go to <output_dir>/<run_name> (a plain name; default runs/das/);
                                    overwrite replaces an earlier output of this tool there, nothing else
  prompt_file, num_prompts, batch_prompts, seed, device ('' automatic, 'cpu', 'cuda', 'cuda:N')
  model.path, model.dtype, model.num_steps, model.guidance_scale
  reward.name, reward.kwargs.*
  smc.kl_coeff (α), smc.num_particles, smc.resampling, smc.tempering, smc.tempering_gamma, smc.selection
  realign.aligned, realign.lam (λ), realign.alpha, realign.smc, realign.sweep ("0,0.5,1,2"), realign.samples_per_prompt
  (prompt_file "world": the embedded world's prompts; reward.name also "colorfulness")

Examples:
  python -m das --config config/sd.py:jpeg --config.num_prompts=4 --config.run_name=jpeg-test
  python -m das --config config/sd.py:realign --config.realign.aligned=PATH --config.realign.lam=0.5
  python -m das --config config/sd.py:realign_world --config.realign.sweep=0,0.5,1,2

Exit status: 0 done; 2 bad input, or another run of the same run_name still running (nothing written);
1 failed while running (e.g. a full disk; an earlier output there is kept).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses ``--config path.py:variant`` (with ``--config.x=y`` overrides) and runs."""
    from das.adapters.loading import WeightsNotAvailableError
    from das.rewards.optional import MissingExtraError
    from dasapp.config_checks import ConfigError
    from dasapp.config_cli import CommandLineError, parse_config_argv, wants_help
    from dasapp.offline import run
    from dasapp.run_dirs import RunDirError
    from dasapp.stopping import Stopped, stop_on_signals

    argv = list(sys.argv if argv is None else argv)
    if wants_help(argv):
        print(HELP)
        return 0
    try:
        with stop_on_signals():  # SIGINT/SIGTERM: one line and 130/143, the old outputs untouched
            config, _ = parse_config_argv(argv, EXAMPLE, lock_config=True)
            run_dir = run(config)
    except Stopped as stop:
        print(f"das: stopped by {stop.name}; no partial output was written: run the command again.", file=sys.stderr)
        return stop.exit_status
    except (CommandLineError, ConfigError, RunDirError, WeightsNotAvailableError, MissingExtraError) as error:
        print(f"das: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"das: {error.strerror or error} ({error.filename}); nothing was overwritten.", file=sys.stderr)
        return 1
    print(f"das: wrote {run_dir}")
    return 0
