"""Command-line config mistakes in both tools (``python -m das`` and the online loop) end in one clean line, exit 2:
a mistyped field names the closest real one, and a config file given without its variant lists the variants."""

from __future__ import annotations

import pytest

from dasapp.config_cli import CommandLineError, parse_config_argv
from tests import REPO_ROOT


def _das_main(argv: list[str]) -> int:
    from dasapp.cli import main

    return main(argv)


def _online_main(argv: list[str]) -> int:
    from online.online_main_smc import main

    return main(argv)


TOOLS = {"das": (_das_main, "config/sd.py", "world"), "online": (_online_main, "config/UCB_smc.py", "tiny_jpeg")}


def _one_stderr_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("tool", TOOLS)
def test_a_mistyped_field_is_one_line_with_the_closest_field(tool, tmp_path, monkeypatch, capsys):
    main, path, variant = TOOLS[tool]
    monkeypatch.chdir(tmp_path)  # nothing may be written: the working directory stays empty
    argv = ["prog", "--config", f"{REPO_ROOT / path}:{variant}", "--config.smc.num_particle=2"]
    assert main(argv) == 2
    line = _one_stderr_line(capsys)
    assert "\\n" not in line and "\\'" not in line, line
    assert line.endswith(
        "unknown config field 'smc.num_particle' (from --config.smc.num_particle); did you mean 'smc.num_particles'?"
    ), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", TOOLS)
def test_a_config_file_without_a_variant_lists_the_variants(tool, tmp_path, monkeypatch, capsys):
    main, path, variant = TOOLS[tool]
    monkeypatch.chdir(REPO_ROOT)  # the relative path a user types
    assert main(["prog", "--config", path, f"--config.output_dir={tmp_path}"]) == 2
    line = _one_stderr_line(capsys)
    assert f"{path} needs a variant: {path}:<variant>, one of: aesthetic, " in line, line
    assert variant in line
    assert list(tmp_path.iterdir()) == []


def test_a_model_family_lists_only_its_own_variants(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(CommandLineError, match=r"^config/sdxl.py needs a variant: .*, one of: aesthetic, ") as error:
        parse_config_argv(["prog", "--config=config/sdxl.py"], "config/sdxl.py:aesthetic")
    assert "world" not in str(error.value)


def test_a_config_file_whose_get_config_takes_no_variant_needs_none(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(
        "import ml_collections\n\n\n"
        "def get_config():\n    return ml_collections.ConfigDict({'seed': 1, 'smc': {'num_particles': 4}})\n"
    )
    config, overrides = parse_config_argv(["prog", "--config", str(path), "--config.seed=3"], str(path))
    assert config.seed == 3 and overrides == {"seed": 3}
    with pytest.raises(CommandLineError, match=r"did you mean 'smc.num_particles'\?$"):
        parse_config_argv(["prog", "--config", str(path), "--config.smc.num_partcles=3"], str(path))


def test_a_field_with_nothing_close_points_to_help():
    argv = ["prog", "--config", str(REPO_ROOT / "config/UCB_smc.py:tiny_jpeg"), "--config.zzzzzz=1"]
    with pytest.raises(CommandLineError, match=r"^unknown config field 'zzzzzz' \(from --config.zzzzzz\); see --help"):
        parse_config_argv(argv, "config/UCB_smc.py:tiny_jpeg")
