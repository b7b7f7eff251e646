"""The commands the README names exist as written: the console scripts of setup.py point at real entry points,
``python -m online`` is the online loop, and every ``.venv/bin/<command>`` of the README's tables is one the
project installs (or the environment's python and accelerate)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

from tests import REPO_ROOT

INSTALLED = {"python", "accelerate"}  # the environment's own


def console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict((part.strip() for part in line.split("=")) for line in scripts)
    raise AssertionError("setup.py declares no entry_points")


def test_every_console_script_points_at_a_callable_main():
    scripts = console_scripts()
    assert set(scripts) == {"das-online", "das-sample"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_every_command_of_the_readme_is_installed():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\.venv/bin/([\w-]+)", readme))
    assert {"das-online", "das-sample"} <= named
    assert named <= set(console_scripts()) | INSTALLED | {"ruff", "activate"}, named


def test_python_m_online_is_the_online_loop():
    done = subprocess.run(
        [sys.executable, "-m", "online", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "online_main_smc.py --config" in done.stdout and "resume_from" in done.stdout
