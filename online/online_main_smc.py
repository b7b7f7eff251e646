"""The online loop's entry point.

    accelerate launch online/online_main_smc.py --config config/UCB_smc.py:aesthetic
    python online/online_main_smc.py --config config/UCB_smc.py:tiny_jpeg --config.loop.num_rounds=7
    python online/online_main_smc.py --config config/UCB_smc.py:tiny_evaluate \\
        --config.reward_model_path=runs/UCB-tiny_jpeg/round_0006
    python online/online_main_smc.py --config.resume_from=runs/UCB-tiny_jpeg   (or --resume runs/UCB-tiny_jpeg)

A mistake in the command line or the config ends in one line and exit status 2 before any
model is loaded or any directory is created; a failure while running ends in one line and
exit status 1 (see ``online/errors.py`` and ``docs/reliability.md``).
"""

from __future__ import annotations

import sys

EXAMPLE = "config/UCB_smc.py:tiny_jpeg"

HELP = """usage: online/online_main_smc.py --config config/<METHOD>_smc.py:<VARIANT> [--config.<field>=<value> ...]
       online/online_main_smc.py --config.resume_from=<run or evaluation dir> [--config.<field>=<value> ...]

Online black-box optimization of a diffusion model: each round samples a batch with DAS
guided by an optimistic surrogate, asks the oracle about it, refits the surrogate, and
saves a checkpoint. Evaluate mode samples with a saved round's surrogate.

Methods (config files): UCB_smc.py (MLP + UCB bonus), Bootstrap_smc.py (bootstrap ensemble),
  GP_smc.py (Gaussian process), Greedy_smc.py (the UCB surrogate's mean, no optimism).
Variants: {variants}
  tiny_* run the embedded world model on a laptop CPU; aesthetic/jpeg use Stable Diffusion 1.5.

Main fields (override with --config.<field>=<value>):
  run_name, output_dir     the run directory is <output_dir>/<run_name> (a plain name)
  overwrite                empty an earlier run of this tool at that place (never anything else)
  resume_from              a run (or evaluation) directory to continue with its own config.json
                           (alias --resume DIR; --config is then optional); a field given on the
                           command line must equal the stored one, except: {safe}
  seed, device             '' (automatic), 'cpu', 'cuda' or 'cuda:N'
  loop.num_rounds, loop.initial_queries, loop.queries_per_round, loop.images_per_prompt
  smc.num_particles, smc.kl_coeff, smc.tempering, smc.tempering_gamma,
  smc.guidance             optimistic (acquisition.kind), mean (greedy), thompson (a posterior draw per
                           call); reference points: none (pretrained samples), oracle (the ceiling:
                           DAS guided by the true oracle)
  acquisition.kind, .beta, .clip  ucb (mean + min(β·std, clip)), max_heads (ensembles), mean
  method                   the run's name in comparisons (python -m online.analysis); '' derives it
  surrogate.kwargs.*       e.g. surrogate.kwargs.hidden, surrogate.kwargs.lam
  oracle.kind              jpeg, colorfulness, rare, multi, aesthetic, external, human
  oracle.noise_std, oracle.command (external), oracle.max_retries, oracle.timeout_s
  oracle.host, oracle.port human: where the rating page listens (127.0.0.1 and a free port by default; the link
                           with its token is printed when a round waits for ratings; needs the [human] extra)
  tracker                  '' | tensorboard | wandb: per-round scalars and image grids in
                           <run_dir>/tensorboard or wandb
  mode=evaluate with reward_model_path=<run_dir>/round_<k>; an interrupted evaluation is resumed
                           with --config.resume_from=<its directory>

Examples:
  python online/online_main_smc.py --config {example} --config.run_name=first
  python online/online_main_smc.py --config.resume_from=runs/first --config.loop.num_rounds=10
  python online/online_main_smc.py --config config/UCB_smc.py:tiny_evaluate \\
      --config.reward_model_path=runs/first/round_0006
  python online/online_main_smc.py --config config/UCB_smc.py:tiny_human   (you rate each round in a browser)

Exit status: 0 done, 2 bad input (nothing created or paid), 1 failed while running (answers kept; resume).
"""


def help_text() -> str:
    from config.online_base import VARIANTS
    from online.validation import SAFE_TO_CHANGE_ON_RESUME

    fields = SAFE_TO_CHANGE_ON_RESUME
    safe = ",\n" + " " * 27
    safe = safe.join(", ".join(fields[i : i + 3]) for i in range(0, len(fields), 3))
    return HELP.format(variants=", ".join(VARIANTS), safe=safe, example=EXAMPLE)


def run(config, overrides: dict | None = None) -> int:
    """Validates `config`, then trains or evaluates; returns the exit status."""
    from das.adapters.loading import WeightsNotAvailableError
    from das.rewards.optional import MissingExtraError
    from dasapp.config_checks import ConfigError
    from dasapp.run_dirs import RunDirError
    from online.errors import RunError, describe_os_error
    from online.validation import prepared_config
    from surrogate import SurrogateCheckpointError

    try:
        config = prepared_config(config, overrides)
    except ConfigError as error:
        return _fail(error, 2)
    from accelerate import Accelerator

    from online.run_directory import RunDirectory

    # Trackers log inside the run directory; the loop starts them once it exists (online/tracking.py).
    tracker = config.tracker if config.mode == "train" else ""
    accelerator = Accelerator(
        cpu=config.device == "cpu", log_with=tracker or None, project_dir=str(RunDirectory.for_config(config).path)
    )
    try:
        if config.mode == "evaluate":  # resumed and validated above: once
            from online.evaluate import evaluate

            evaluate(config, accelerator)
        else:
            from online.loop import train

            train(config, accelerator)
    except (ConfigError, RunDirError, SurrogateCheckpointError, WeightsNotAvailableError, MissingExtraError) as error:
        return _fail(error, 2)
    except RunError as error:
        return _fail(error, 1)
    except OSError as error:
        return _fail(describe_os_error(error), 1)
    finally:
        if accelerator.trackers:
            accelerator.end_training()
    return 0


def _fail(error, status: int) -> int:
    text = " ".join(str(error).split())  # always one line
    print(f"error: {text}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """The command line's entry point; returns the exit status.

    SIGINT (Ctrl-C) and SIGTERM stop the run cleanly (:mod:`dasapp.stopping`): the answers
    already given are on disk, a query in flight is abandoned (asked again on resume), the
    run's lock is released, an external oracle's process group is killed, the rating page is
    closed; one line says how to resume, and the status is 130 (SIGINT) or 143 (SIGTERM).
    """
    from dasapp.config_cli import CommandLineError, parse_config_argv, wants_help
    from dasapp.stopping import Stopped, stop_on_signals

    argv = list(sys.argv if argv is None else argv)
    if wants_help(argv):
        print(help_text())
        return 0
    config = None
    with stop_on_signals():
        try:
            try:
                argv = expand_resume_alias(argv)
                config, overrides = parse_config_argv(argv, EXAMPLE, lock_config=False, without_config=config_of_run)
            except CommandLineError as error:
                return _fail(error, 2)
            return run(config, overrides)
        except Stopped as stop:
            if _main_rank():
                print(stop_message(stop, argv, config), file=sys.stderr, flush=True)
            return stop.exit_status


def stop_message(stop, argv: list[str], config) -> str:
    """The one line a stopped run ends with: what is kept, and the command that continues it."""
    if config is None:
        return f"stopped by {stop.name} before the run started; nothing was written or paid: run the command again."
    what = "evaluation" if config.mode == "evaluate" else "run"
    from online.run_directory import RunDirectory

    path = RunDirectory.for_config(config).path
    if not (config.resume_from or _made_by_this_process(path)):
        return (
            f"stopped by {stop.name} before the {what} directory was ready; no query was paid: "
            "run the same command again."
        )
    return f"stopped by {stop.name}; every answer so far is saved: resume the {what} with {resume_command(path)}"


def resume_command(path) -> str:
    """The line to paste in a shell that continues the run or evaluation at `path` (its own
    ``config.json`` holds the settings, so no config file or field is needed)."""
    import shlex

    return shlex.join(["python", "online/online_main_smc.py", f"--config.resume_from={path}"])


def expand_resume_alias(argv: list[str]) -> list[str]:
    """`argv` with ``--resume DIR`` (or ``--resume=DIR``) written as ``--config.resume_from=DIR``."""
    out, i = [argv[0]] if argv else [], 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--resume="):
            arg = "--config.resume_from=" + arg.partition("=")[2]
        elif arg == "--resume" and i + 1 < len(argv):
            arg, i = f"--config.resume_from={argv[i + 1]}", i + 1
        out.append(arg)
        i += 1
    return out


def config_of_run(argv: list[str]):
    """The config of a command line without ``--config``: the stored config of the run (or, by
    its marker or ``--config.mode``, the evaluation) named by ``--config.resume_from``.

    Raises:
        CommandLineError: no ``resume_from`` either, or the directory is no resumable run.
    """
    from dasapp.config_checks import ConfigError
    from dasapp.config_cli import CommandLineError, flag_value
    from online.validation import config_of_run as stored

    resume_from = flag_value(argv, "config.resume_from")
    if not resume_from:
        raise CommandLineError(
            f"--config is required, e.g. --config {EXAMPLE}, unless you resume with --config.resume_from=<run dir>."
        )
    try:
        return stored(resume_from, flag_value(argv, "config.mode"))
    except ConfigError as error:
        raise CommandLineError(str(error)) from None


def _made_by_this_process(path) -> bool:
    """Whether the directory at `path` carries the marker this process wrote (the run was created here)."""
    import os

    from dasapp.run_dirs import read_marker

    marker = read_marker(path)
    return marker is not None and marker.get("pid") == os.getpid()


def _main_rank() -> bool:
    """Whether this is the main process of a launch (only it prints the line a stop ends with)."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
