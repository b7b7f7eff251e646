"""One writer per run name for ``python -m das``: the lock, the re-check before the swap, and
what a killed run leaves behind (issue 23).

A real run is paused inside its output writing (``dasapp.offline._write_files`` wrapped in a
child process) so that a second run, a lock probe or a SIGKILL meets it at a known point.
The embedded world's 32×32 model on the CPU with 2 steps keeps each run to seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dasapp.offline import run
from dasapp.run_dirs import DAS_SAMPLE_KIND, MARKER, RunDirError
from tests import REPO_ROOT as ROOT

NAME = "lock-test"

# Runs ``python -m das``'s main with its output writing paused: after the files are written to the
# temporary folder it touches argv[1] and waits for argv[2] to exist.
PAUSED_RUN = """
import sys, time
from pathlib import Path
import dasapp.offline
from dasapp.cli import main

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
real = dasapp.offline._write_files

def paused(tmp, config, records):
    real(tmp, config, records)
    ready.write_text("writing")
    while not go.exists():
        time.sleep(0.05)

dasapp.offline._write_files = paused
sys.exit(main(["das", *sys.argv[3:]]))
"""


def das_args(out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        "config/sd.py:world",
        "--config.model.num_steps=2",
        "--config.num_prompts=2",
        "--config.smc.num_particles=2",
        f"--config.output_dir={out}",
        f"--config.run_name={NAME}",
        *extra,
    ]


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def start_paused(tmp_path: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """A ``python -m das`` run paused while writing; returns it and the file that lets it go on."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    command = [sys.executable, "-c", PAUSED_RUN, str(ready), str(go), *das_args(out)]
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"the first run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the first run never reached its output writing")
        time.sleep(0.05)
    return proc, go


def lock_is_held(path: Path) -> bool:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def world_config(out: Path, **fields):
    from config.sd import get_config

    config = get_config("world")
    config.model.num_steps = 2
    config.num_prompts = 2
    config.smc.num_particles = 2
    config.output_dir = str(out)
    config.run_name = NAME
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def write_das_run(path: Path, note: str) -> None:
    """A folder that is an output of this tool (its marker), holding `note`."""
    path.mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"tool": "das-toolkit", "kind": DAS_SAMPLE_KIND}))
    (path / "note.txt").write_text(note)


def test_a_second_run_stops_while_the_first_runs_and_a_killed_run_is_tidied_by_the_next_start(tmp_path):
    out = tmp_path / "out"
    first, _ = start_paused(tmp_path, out)
    try:
        assert lock_is_held(out / f".{NAME}.lock")
        before = sorted(p.name for p in out.iterdir())
        second = subprocess.run(
            [sys.executable, "-m", "das", *das_args(out, "--config.overwrite=True")],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2, second.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("das:"), second.stderr[-2000:]
        assert f"is being made by process {first.pid}" in lines[0], lines[0]
        assert sorted(p.name for p in out.iterdir()) == before  # the second run created nothing
    finally:
        first.send_signal(signal.SIGKILL)  # the first run dies while writing its outputs
        first.wait(timeout=60)
    assert not lock_is_held(out / f".{NAME}.lock")  # released by the kernel
    left = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(f".{NAME}.") and (left[0] / "images").is_dir()
    mine = make_lookalikes(tmp_path, out)
    run_dir = run(world_config(out))  # the next start
    assert not left[0].exists()
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == ["0000.png", "0001.png"]
    assert (run_dir / MARKER).is_file()
    for name, file in mine.items():
        assert (out / name / file).read_text() == "mine", name
    assert (out / f".{NAME}.zzzzzzzz.tmp").is_symlink() and (tmp_path / "user" / "precious.txt").read_text() == "mine"


def make_lookalikes(tmp_path: Path, out: Path) -> dict[str, str]:
    """A user's folders and a link that look a little (or exactly) like leftovers; returns folder -> file."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "precious.txt").write_text("mine")
    mine = {
        ".foo.tmp": "x.txt",
        f".{NAME}.mine.tmp": "x.txt",
        ".other-run.abcdefgh.tmp": "x.txt",
        f".{NAME}.old.qwertyui.tmp": "notes.txt",
    }
    for name, file in mine.items():
        (out / name).mkdir()
        (out / name / file).write_text("mine")
    (out / f".{NAME}.zzzzzzzz.tmp").symlink_to(user, target_is_directory=True)
    return mine


def test_a_kill_between_the_two_renames_puts_the_earlier_outputs_back(tmp_path):
    out = tmp_path / "out"
    write_das_run(out / f".{NAME}.old.abcdefgh.tmp" / "run", "earlier outputs")  # set aside, not yet replaced
    (out / f".{NAME}.qwertyui.tmp" / "images").mkdir(parents=True)  # the killed run's new outputs
    with pytest.raises(RunDirError, match="already exists"):  # back in place, so overwrite=False refuses
        run(world_config(out))
    assert (out / NAME / "note.txt").read_text() == "earlier outputs"
    assert sorted(p.name for p in out.iterdir()) == sorted([NAME, f".{NAME}.lock"])


def test_a_run_directory_that_appears_while_sampling_is_not_replaced(tmp_path, monkeypatch):
    import dasapp.offline

    out = tmp_path / "out"
    real = dasapp.offline._write_files

    def meanwhile(tmp, config, records):  # another writer, not taking the lock, finishes first
        real(tmp, config, records)
        write_das_run(out / NAME, "theirs")

    monkeypatch.setattr(dasapp.offline, "_write_files", meanwhile)
    with pytest.raises(RunDirError, match="appeared while this run was working"):
        run(world_config(out))
    assert (out / NAME / "note.txt").read_text() == "theirs"
    assert sorted(p.name for p in out.iterdir()) == sorted([NAME, f".{NAME}.lock"])


def test_a_users_file_in_the_lock_files_place_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("mine")
    (out / f".{NAME}.lock").symlink_to(tmp_path / "precious.txt")
    with pytest.raises(RunDirError, match="in the way of this run's lock file"):
        run(world_config(out))
    assert (tmp_path / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [f".{NAME}.lock"]
