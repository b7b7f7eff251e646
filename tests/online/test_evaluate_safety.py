"""Evaluate mode keeps what it was paid for: it reads its prompts before it creates or replaces
anything, stages its batch and journals every answer, resumes an interrupted evaluation
without asking twice, refuses a ``resume_from`` that is not an evaluation, and always writes
strict JSON.

Every case runs the real entry point (``online/online_main_smc.py``'s ``main``) on the tiny
random pixel model, with an external oracle that logs every item it is asked about.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from dasapp.run_dirs import DirectoryLock, RunDirError
from online.online_main_smc import main
from tests.online.online_helpers import LOGGING_ORACLE, loop_argv
from tests.online.test_bad_inputs import snapshot

NUM_IMAGES = 2  # loop_argv: evaluate.num_prompts=2, evaluate.images_per_prompt=1


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    """A 2-round training run and a complete evaluation of its last round, made once; cases copy them.

    Returns a dict: ``root`` (holding ``runs/run``, ``runs/eval``, the prompt file and the
    oracle's log), ``command`` (the oracle), ``prompts`` (the evaluation prompt file).
    """
    root = tmp_path_factory.mktemp("evaluate_safety")
    (root / "oracle.py").write_text(LOGGING_ORACLE)
    command = (sys.executable, str(root / "oracle.py"), str(root / "asked.log"))
    prompts = root / "eval_prompts.txt"
    prompts.write_text("a red square\na blue circle\n")
    assert main(loop_argv(tiny_model, root / "runs", command)) == 0
    assert main(evaluate_argv(tiny_model, root / "runs", command, root / "runs" / "run", prompts)) == 0
    return {"root": root, "command": command, "prompts": prompts}


def evaluate_argv(tiny_model, output_dir: Path, command, trained: Path, prompts: Path, *extra) -> list[str]:
    """Evaluate mode on round 1 of `trained`, writing ``<output_dir>/eval``."""
    return [
        *loop_argv(tiny_model, output_dir, command, run_name="eval"),
        "--config.mode=evaluate",
        f"--config.reward_model_path={trained / 'round_0001'}",
        f"--config.prompts.eval_file={prompts}",
        *extra,
    ]


@pytest.fixture
def copied(finished, tiny_model, tmp_path):
    """The finished runs copied under this test's tmp_path: ``(argv of the evaluation, its directory, oracle log)``.

    The oracle is the module's logging one; the copied evaluation's config.json names the copied
    prompt file and checkpoint, as if it had been made here (a resume compares them).
    """
    shutil.copytree(finished["root"] / "runs", tmp_path / "runs")
    prompts = tmp_path / "eval_prompts.txt"
    shutil.copy(finished["prompts"], prompts)
    trained, evaluation = tmp_path / "runs" / "run", tmp_path / "runs" / "eval"
    stored = json.loads((evaluation / "config.json").read_text())
    stored["prompts"]["eval_file"], stored["reward_model_path"] = str(prompts), str(trained / "round_0001")
    (evaluation / "config.json").write_text(json.dumps(stored, indent=2))
    argv = evaluate_argv(tiny_model, tmp_path / "runs", finished["command"], trained, prompts)
    return argv, evaluation, Path(finished["command"][2])


def run_main(argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def strict_json(path: Path):
    """`path` parsed as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(constant: str):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def asked(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def journal(evaluation: Path) -> list[dict]:
    return [json.loads(line) for line in (evaluation / "answers.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- case 1: the prompt file first
def _empty(path: Path, monkeypatch) -> None:
    path.write_text("\n# only a comment\n\n")


def _missing(path: Path, monkeypatch) -> None:
    path.unlink()


def _undecodable(path: Path, monkeypatch) -> None:
    path.write_bytes(b"a red square\n\xff\xfe not utf-8 \xc3\x28\n")


def _vanishes_after_validation(path: Path, monkeypatch) -> None:
    """The file passes validation and is gone when the evaluation reads it."""
    import online.builders

    real = online.builders.read_prompts

    def remove_then_read(source):
        path.unlink(missing_ok=True)
        return real(source)

    monkeypatch.setattr(online.builders, "read_prompts", remove_then_read)


@pytest.mark.parametrize("spoil", [_empty, _missing, _undecodable, _vanishes_after_validation])
def test_an_overwrite_with_a_bad_prompt_file_keeps_the_old_evaluation(spoil, copied, tmp_path, capsys, monkeypatch):
    argv, evaluation, log = copied
    spoil(tmp_path / "eval_prompts.txt", monkeypatch)
    before, asked_before = snapshot(tmp_path / "runs"), asked(log)
    status, lines = run_main([*argv, "--config.overwrite=True"], capsys)
    assert status == 2 and len(lines) == 1, lines
    assert "eval_prompts.txt" in lines[0], lines[0]
    assert snapshot(tmp_path / "runs") == before, "the earlier evaluation was changed or deleted"
    assert asked(log) == asked_before, "a query was paid"
    assert strict_json(evaluation / "metrics.json")["answered"] == NUM_IMAGES


def test_the_prompts_are_read_before_the_models_load(copied, tmp_path, capsys, monkeypatch):
    """A prompt file removed while the (possibly slow) models load no longer matters: it was read first."""
    import online.builders

    argv, evaluation, _ = copied
    real = online.builders.build_adapter

    def remove_then_build(*args, **kwargs):
        (tmp_path / "eval_prompts.txt").unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(online.builders, "build_adapter", remove_then_build)
    status, lines = run_main([*argv, "--config.overwrite=True"], capsys)
    assert status == 0 and not lines, lines
    assert strict_json(evaluation / "metrics.json")["answered"] == NUM_IMAGES


# ---------------------------------------------------------------------------- case 4: staged, journaled, resumable
def _full_disk_for(target: Path, monkeypatch) -> None:
    """Every atomic write of `target` fails with ENOSPC (as a full disk would), others work."""
    import atomicfile
    import online.storage

    def failing(real):
        def write(path, data):
            if Path(path) == target:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, data)

        return write

    monkeypatch.setattr(atomicfile, "atomic_write_bytes", failing(atomicfile.atomic_write_bytes))
    monkeypatch.setattr(online.storage, "atomic_write_bytes", failing(online.storage.atomic_write_bytes))


def test_a_full_disk_after_the_answers_is_resumed_without_asking_again(copied, tmp_path, capsys, monkeypatch):
    argv, evaluation, log = copied
    argv = [*argv, "--config.run_name=again"]
    again = tmp_path / "runs" / "again"
    with monkeypatch.context() as patch:
        _full_disk_for(again / "metrics.json", patch)
        status, lines = run_main(argv, capsys)
    assert status == 1 and len(lines) == 1, lines
    assert "No space left on device" in lines[0] and f"--config.resume_from={again}" in lines[0], lines[0]
    answers = journal(again)
    assert sorted(row["index"] for row in answers) == list(range(NUM_IMAGES))
    assert all(row["status"] == "ok" for row in answers) and (again / "batch.safetensors").is_file()
    paid = asked(log)

    status, lines = run_main([*argv, f"--config.resume_from={again}"], capsys)
    assert status == 0 and not lines, lines
    assert asked(log) == paid, "the resumed evaluation asked the oracle again"
    metrics = strict_json(again / "metrics.json")
    assert metrics["answered"] == NUM_IMAGES and metrics["failed_queries"] == 0
    assert [image["true_reward"] for image in metrics["images"]] == [row["true_reward"] for row in answers]
    assert len(list((again / "images").glob("*.png"))) == NUM_IMAGES and (again / "grid.png").is_file()


def test_an_evaluation_killed_mid_query_asks_each_item_once(copied, tmp_path, capsys, monkeypatch):
    """Interrupted right after its first answer was journaled, then resumed: every item asked exactly once."""
    import online.storage

    argv, evaluation, log = copied
    argv = [*argv, "--config.run_name=killed", "--config.oracle.batch_size=1"]
    killed = tmp_path / "runs" / "killed"
    paid = len(asked(log))
    real = online.storage.AnswerJournal.append

    def append_then_die(self, rows):
        real(self, rows)
        raise KeyboardInterrupt  # as a kill right after the answer became durable

    with monkeypatch.context() as patch:
        patch.setattr(online.storage.AnswerJournal, "append", append_then_die)
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    assert len(journal(killed)) == 1 and not (killed / "metrics.json").exists()

    status, lines = run_main([*argv, f"--config.resume_from={killed}"], capsys)
    assert status == 0 and not lines, lines
    new = asked(log)[paid:]
    assert len(new) == NUM_IMAGES and len(set(new)) == NUM_IMAGES, "an item was asked twice (or never)"
    assert strict_json(killed / "metrics.json")["answered"] == NUM_IMAGES


def test_resuming_a_complete_evaluation_asks_nothing_and_rewrites_the_same_scores(copied, capsys):
    argv, evaluation, log = copied
    before, paid = strict_json(evaluation / "metrics.json"), asked(log)
    status, lines = run_main([*argv, f"--config.resume_from={evaluation}"], capsys)
    assert status == 0 and not lines, lines
    after = strict_json(evaluation / "metrics.json")
    before.pop("checkpoint"), after.pop("checkpoint")  # the copy's path, as its config.json now names it
    assert asked(log) == paid and after == before


# ---------------------------------------------------------------------------- case 9: strict JSON, honest counts
PARTLY_FAILING = """
import sys
for i, line in enumerate(sys.stdin):
    print("nan" if i == 0 else -0.5)
"""


def test_an_oracle_failing_on_every_item_exits_1_with_strict_json(copied, tmp_path, capsys):
    argv, _, _ = copied
    argv = [*argv, "--config.run_name=failing", "--config.oracle.command=('false',)", "--config.oracle.max_retries=0"]
    status, lines = run_main(argv, capsys)
    assert status == 1 and len(lines) == 1 and "answered none" in lines[0], lines
    failing = tmp_path / "runs" / "failing"
    assert str(failing / "answers.jsonl") in lines[0]
    metrics = strict_json(failing / "metrics.json")
    assert metrics["answered"] == 0 and metrics["failed_queries"] == NUM_IMAGES
    assert metrics["true_reward"] == {"mean": None, "std": None, "max": None, "min": None}
    assert all(image["true_reward"] is None for image in metrics["images"])
    assert all(value is None for value in metrics["per_prompt_mean"].values())
    assert [row["status"] for row in journal(failing)] == ["failed"] * NUM_IMAGES


def test_a_partly_failing_oracle_writes_nulls_and_counts(copied, tmp_path, capsys):
    argv, _, _ = copied
    script = tmp_path / "partly.py"
    script.write_text(PARTLY_FAILING)
    command = (sys.executable, str(script))
    argv = [*argv, "--config.run_name=partly", f"--config.oracle.command={command!r}", "--config.oracle.max_retries=0"]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "over 1 of 2 images (1 failed)" in printed and "nan" not in printed, printed
    metrics = strict_json(tmp_path / "runs" / "partly" / "metrics.json")
    assert metrics["answered"] == 1 and metrics["failed_queries"] == 1
    assert metrics["true_reward"]["mean"] == -0.5 and metrics["true_reward"]["std"] == 0.0
    assert [image["true_reward"] for image in metrics["images"]] == [None, -0.5]


# ------------------------------------------------------------------------- case 11: resume_from must be an evaluation
def _training_run(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "run"


def _missing_folder(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "nowhere"


def _config_without_marker(tmp_path: Path) -> Path:
    """An evaluation's config.json (and everything else) copied, but no run.json: not an evaluation."""
    folder = tmp_path / "copy"
    shutil.copytree(tmp_path / "runs" / "eval", folder)
    (folder / "run.json").unlink()
    return folder


def _evaluation_of_an_older_tool(tmp_path: Path) -> Path:
    """A marked evaluation with metrics but no staged batch: resuming it would pay for everything again."""
    folder = tmp_path / "runs" / "eval"
    (folder / "batch.safetensors").unlink()
    (folder / "answers.jsonl").unlink()
    return folder


@pytest.mark.parametrize(
    ("target", "text"),
    [
        (_training_run, "not a 'online-evaluate' one"),
        (_missing_folder, "not a directory"),
        (_config_without_marker, "no run.json marker"),
        (_evaluation_of_an_older_tool, "no staged batch"),
    ],
    ids=["training run", "missing folder", "config.json without marker", "no staged batch"],
)
def test_resume_from_must_be_an_evaluation_of_this_tool(target, text, copied, tmp_path, capsys):
    argv, _, log = copied
    resume_from = target(tmp_path)
    before, paid = snapshot(tmp_path), asked(log)
    status, lines = run_main([*argv, f"--config.resume_from={resume_from}"], capsys)
    assert status == 2 and len(lines) == 1, lines
    assert text in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "a refused resume changed files"
    assert asked(log) == paid, "a refused resume paid for a query"


def test_resuming_an_evaluation_with_other_settings_is_refused(copied, tmp_path, capsys):
    argv, evaluation, log = copied
    before, paid = snapshot(tmp_path), asked(log)
    status, lines = run_main([*argv, "--config.seed=7", f"--config.resume_from={evaluation}"], capsys)
    assert status == 2 and len(lines) == 1 and "seed" in lines[0] and "start a new evaluation" in lines[0], lines
    assert snapshot(tmp_path) == before and asked(log) == paid


# ---------------------------------------------------------------------------- the lock
def test_an_evaluation_holds_its_lock_while_it_asks(copied, tmp_path, capsys, monkeypatch):
    import online.evaluate

    argv, _, _ = copied
    locked = tmp_path / "runs" / "locked"
    seen = []
    real = online.evaluate.query_with_retries

    def ask_while_checking(*args, **kwargs):
        with pytest.raises(RunDirError, match="in use by"):
            DirectoryLock(locked, "evaluation").acquire()
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(online.evaluate, "query_with_retries", ask_while_checking)
    status, lines = run_main([*argv, "--config.run_name=locked"], capsys)
    assert status == 0 and seen == [True], lines


def test_a_locked_evaluation_is_not_resumed(copied, tmp_path, capsys):
    argv, evaluation, log = copied
    before, paid = snapshot(tmp_path), asked(log)
    with DirectoryLock(evaluation, "evaluation"):
        status, lines = run_main([*argv, f"--config.resume_from={evaluation}"], capsys)
    assert status == 2 and len(lines) == 1 and "in use by" in lines[0], lines
    assert snapshot(tmp_path) == before and asked(log) == paid


# ---------------------------------------------------------------------------- the pretrained reference
def test_the_pretrained_reference_samples_the_pretrained_chain_whatever_the_checkpoint(copied, tmp_path, capsys):
    """``smc.guidance=none`` in evaluate mode: the same prompts, drawn from the pretrained chain. Its images
    do not depend on the checkpoint (two rounds' checkpoints give the same batch), unlike the guided evaluation's."""
    from safetensors.torch import load_file

    argv, guided, _ = copied
    batches = []
    for k in (0, 1):
        reference = [
            *[a for a in argv if not a.startswith("--config.reward_model_path=")],
            f"--config.reward_model_path={tmp_path / 'runs' / 'run' / f'round_{k:04d}'}",
            f"--config.run_name=reference{k}",
            "--config.smc.guidance=none",
        ]
        status, lines = run_main(reference, capsys)
        assert status == 0, lines
        metrics = strict_json(tmp_path / "runs" / f"reference{k}" / "metrics.json")
        assert metrics["num_images"] == metrics["answered"] == NUM_IMAGES
        batches.append(load_file(str(tmp_path / "runs" / f"reference{k}" / "batch.safetensors"))["images"])
    assert torch.equal(batches[0], batches[1])
    guided_images = load_file(str(guided / "batch.safetensors"))["images"]
    assert guided_images.shape == batches[0].shape and not torch.equal(guided_images, batches[0])
