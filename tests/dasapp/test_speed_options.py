"""The opt-in speed options (``smc.autocast``, ``model.channels_last``, ``model.compile_unet``): declared off in
every config file, accepted and checked on the command line, and handed to the sampler's settings."""

import importlib

import pytest

from dasapp.cli import main
from dasapp.config_cli import parse_config_argv
from dasapp.factory import settings_from_config
from dasapp.offline import validate
from tests import REPO_ROOT

SPEED = ("--config.smc.autocast=bf16", "--config.model.channels_last=True", "--config.model.compile_unet=True")


@pytest.mark.parametrize(
    "spec",
    [
        "sd:world",
        "sd:aesthetic",
        "sdxl:jpeg",
        "lcm:pick",
        "UCB_smc:tiny_jpeg",
        "GP_smc:aesthetic",
        "Greedy_smc:evaluate",
    ],
)
def test_every_config_declares_the_speed_options_off(spec):
    module, variant = spec.split(":")
    config = importlib.import_module(f"config.{module}").get_config(variant)
    assert (config.smc.autocast, config.model.channels_last, config.model.compile_unet) == ("", False, False)
    assert settings_from_config(config.smc).autocast is None


def test_the_command_line_accepts_and_checks_the_speed_options(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    argv = ["das", "--config", "config/sd.py:world", *SPEED, f"--config.output_dir={tmp_path}"]
    config, overrides = parse_config_argv(argv, "config/sd.py:world", lock_config=True)
    assert {key: overrides[key] for key in ("smc.autocast", "model.channels_last", "model.compile_unet")} == {
        "smc.autocast": "bf16",
        "model.channels_last": True,
        "model.compile_unet": True,
    }
    validate(config)  # raises ConfigError on anything wrong
    assert settings_from_config(config.smc).autocast == "bf16"
    assert list(tmp_path.iterdir()) == []  # validation creates nothing


@pytest.mark.parametrize(
    "flag, text",
    [("--config.smc.autocast=fp8", "smc.autocast"), ("--config.model.channels_last=maybe", "channels_last")],
)
def test_a_wrong_speed_option_ends_in_one_line_and_exit_2(tmp_path, monkeypatch, capsys, flag, text):
    monkeypatch.chdir(REPO_ROOT)
    status = main(["das", "--config", "config/sd.py:world", flag, f"--config.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("das:") and text in err[0], err
    assert list(tmp_path.iterdir()) == []
