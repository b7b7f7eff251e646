"""Prompt files are untrusted input: ``python -m das`` reads and decodes them in full at
validation, so a file that is not UTF-8 text, a folder or a file without a prompt ends in one
line and exit status 2 before anything is created (issue 23)."""

from __future__ import annotations

import os
import re
import threading

import pytest

from dasapp.cli import main
from dasapp.config_checks import ConfigError
from dasapp.factory import check_prompt_source, read_prompts
from dasapp.offline import validate

CASES = {
    "not UTF-8": (b"a red square\n\xff\xfe a blue circle\n", "is not UTF-8 text (an invalid byte on line 2)"),
    "UTF-16": ("a red square\n".encode("utf-16-le"), "holds NUL bytes"),
    "only comments": (b"# nothing here\n\n   \n", "has no prompts"),
    "empty": (b"", "has no prompts"),
    "a folder": (None, "is a folder, not a file"),
}


def _prompt_file(tmp_path, data: bytes | None):
    path = tmp_path / "prompts.txt"
    path.mkdir() if data is None else path.write_bytes(data)
    return path


def _config(tmp_path, prompt_file):
    from config.sd import get_config

    config = get_config("world")
    config.prompt_file = str(prompt_file)
    config.output_dir = str(tmp_path / "out")
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_prompt_file_is_refused_at_validation_in_one_line(case, tmp_path, capsys):
    data, message = CASES[case]
    path = _prompt_file(tmp_path, data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(_config(tmp_path, path))
    capsys.readouterr()
    argv = ["das", "--config", "config/sd.py:world", f"--config.prompt_file={path}"]
    status = main([*argv, f"--config.output_dir={tmp_path / 'out'}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("das: prompt_file: The prompt file") and str(path) in lines[0] and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]  # nothing created


def test_read_prompts_names_the_file_for_both_tools(tmp_path):
    path = _prompt_file(tmp_path, b"\xc3\x28 broken\n")
    for call in (lambda: read_prompts(str(path)), lambda: check_prompt_source(str(path), "is missing.")):
        with pytest.raises(ConfigError, match="not UTF-8 text") as caught:
            call()
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompts(str(tmp_path / "missing.txt"))


def _unblock_readers(fifo, stop: threading.Event) -> None:
    """Opens `fifo` for writing (and closes it) whenever a reader waits on it, so a reader gets EOF, not a hang."""
    while not stop.wait(0.2):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting
            continue


def test_a_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()
    threading.Thread(target=_unblock_readers, args=(fifo, stop), daemon=True).start()
    try:
        with pytest.raises(ConfigError, match="not a regular file"):
            read_prompts(str(fifo))
        with pytest.raises(ConfigError, match="prompt_file: .*not a regular file"):
            check_prompt_source(str(fifo), "is missing.", field="prompt_file")
    finally:
        stop.set()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_prompt_file_is_one_line(tmp_path):
    path = _prompt_file(tmp_path, b"a red square\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_prompts(str(path))


def test_a_utf8_file_with_a_byte_order_mark_reads_as_its_prompts(tmp_path):
    path = _prompt_file(tmp_path, "\ufeffa red square\n# a comment\n\na blue circle\n".encode())
    assert read_prompts(str(path)) == ["a red square", "a blue circle"]
    assert read_prompts(str(path), 1) == ["a red square"]
