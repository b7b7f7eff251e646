"""The online loop's entry point.

    accelerate launch online/online_main_smc.py --config config/UCB_smc.py:aesthetic
    python online/online_main_smc.py --config config/UCB_smc.py:tiny_jpeg --config.loop.num_rounds=7
    python online/online_main_smc.py --config config/UCB_smc.py:tiny_evaluate \\
        --config.reward_model_path=runs/UCB-tiny_jpeg/round_0006
    python online/online_main_smc.py --config config/UCB_smc.py:tiny_jpeg --config.resume_from=runs/UCB-tiny_jpeg

A config mistake ends in one line and exit status 2 before any model is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Loop config, e.g. config/UCB_smc.py:tiny_jpeg.", lock_config=False)


def run(config) -> int:
    """Validates `config`, then trains or evaluates; returns the exit status."""
    from online.validation import ConfigError, validate

    try:
        validate(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=config.device == "cpu", log_with=config.tracker or None, project_dir=config.output_dir)
    if config.tracker:
        accelerator.init_trackers(config.run_name, config={"surrogate": config.surrogate.kind, "oracle": config.oracle.kind})
    try:
        if config.mode == "evaluate":
            from online.evaluate import run_evaluation

            run_evaluation(config, accelerator)
        else:
            from online.loop import run_training

            run_training(config, accelerator)
    finally:
        if config.tracker:
            accelerator.end_training()
    return 0


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; pass settings as --config.<field>=<value>.", file=sys.stderr)
        sys.exit(2)
    if _CONFIG.value is None:
        print("error: --config is required, e.g. --config config/UCB_smc.py:tiny_jpeg.", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(_CONFIG.value))


if __name__ == "__main__":
    app.run(main)
