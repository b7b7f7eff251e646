"""Fields given more than once on the command line: the last value wins, tuples included
(absl and ml_collections would join the tuples of a repeated tuple field; issue 23)."""

from __future__ import annotations

import pytest

from dasapp.config_cli import parse_config_argv

CONFIG = ["prog", "--config", "config/UCB_smc.py:tiny_jpeg"]


@pytest.mark.parametrize(
    "args",
    [
        ["--config.surrogate.kwargs.hidden=(16,8)", "--config.surrogate.kwargs.hidden=(4,)"],
        ["--config.surrogate.kwargs.hidden", "(16, 8)", "--config.seed=2", "--config.surrogate.kwargs.hidden", "(4,)"],
        ["--config.surrogate.kwargs.hidden=(16,8)", "-config.surrogate.kwargs.hidden=(4,)"],
        [f"--config.surrogate.kwargs.hidden={value}" for value in ("(1, 2, 3)", "(8,)", "(4,)")],
    ],
)
def test_a_repeated_tuple_field_takes_its_last_value(args):
    argv = [*CONFIG, "--config.seed=3", *args, "--config.seed=5"]  # a repeated plain field: the last one too
    config, overrides = parse_config_argv(argv, "config/UCB_smc.py:tiny_jpeg")
    assert config.surrogate.kwargs.hidden == (4,) and config.seed == 5
    assert overrides == {"surrogate.kwargs.hidden": (4,), "seed": 5}
