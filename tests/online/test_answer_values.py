"""Answers the surrogate cannot learn from, and fits that fail, through the real entry point
(``online.online_main_smc.main``): the run never gets stuck, nothing paid for is asked twice.

* an oracle answer outside the float32 range (``1e308``) is refused like a non-finite one:
  retried, journaled as failed with the reason, never stored as data;
* a dataset shard from an older version that holds such an answer as valid is left out of the
  fit, so the run resumes;
* a fit that raises in round ``k > 0`` keeps the surrogate of round ``k − 1`` and the run goes
  on; in round 0 the run ends with one line, and a resume fits again without asking anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from online.online_main_smc import main
from surrogate import load_surrogate
from surrogate.base import Surrogate
from tests.online.online_helpers import loop_argv

# The logging oracle, except that the first image it is ever asked about is rated 1e308, every time.
HUGE_FIRST_ORACLE = """
import hashlib, sys
from pathlib import Path
log = Path(sys.argv[1])
first = Path(sys.argv[1] + ".first")
for line in sys.stdin:
    digest = hashlib.sha1(Path(line.split("\\t")[0]).read_bytes()).hexdigest()
    with open(log, "a") as handle:
        handle.write(digest + "\\n")
    if not first.exists():
        first.write_text(digest)
    print("1e308" if first.read_text() == digest else -(int(digest[:6], 16) % 1000) / 1000)
"""


def _run(argv, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    status = main(argv)
    captured = capsys.readouterr()
    return status, [line for line in captured.err.splitlines() if line.strip()], captured.out


def _asked(log: Path) -> list[str]:
    """Every item the oracle was asked about, one digest per ask."""
    return log.read_text().splitlines()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _fit_failing_once(monkeypatch, round_index: int) -> list[int]:
    """Makes the surrogate's fit of round `round_index` raise once (after spoiling the model it
    was called on, as a fit that dies half-way would); returns the list of rounds it failed."""
    real = Surrogate.fit
    failed: list[int] = []

    def flaky(self, *args, **kwargs):
        if kwargs.get("round") == round_index and not failed:
            failed.append(round_index)
            for parameter in getattr(self, "net", torch.nn.Linear(1, 1)).parameters():
                parameter.data.fill_(float("nan"))
            raise torch.linalg.LinAlgError("simulated: the matrix is not positive definite")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Surrogate, "fit", flaky)
    return failed


def test_an_answer_outside_the_float32_range_is_journaled_as_failed_and_the_run_completes(
    tiny_model, tmp_path, capsys
):
    script = tmp_path / "oracle.py"
    script.write_text(HUGE_FIRST_ORACLE)
    log = tmp_path / "asked.log"
    argv = loop_argv(tiny_model, tmp_path / "runs", (sys.executable, str(script), str(log)))
    status, errors, _ = _run(argv + ["--config.oracle.max_retries=1"], capsys)
    assert status == 0 and not errors, errors
    run = tmp_path / "runs" / "run"
    answers = [json.loads(line) for line in (run / "round_0000" / "answers.jsonl").read_text().splitlines()]
    failed = [row for row in answers if row["status"] == "failed"]
    assert len(answers) == 4 and len(failed) == 1, answers
    assert failed[0]["attempts"] == 2 and failed[0]["reward"] is None
    assert "value 1e+308 outside the float32 range" in failed[0]["error"]
    shard = _tensors(run / "data" / "round_0000.safetensors")
    assert int((~shard["valid"]).sum()) == 1 and torch.isnan(shard["rewards"][~shard["valid"]]).all()
    assert torch.isfinite(shard["rewards"][shard["valid"]].float()).all()
    assert [row["failed_queries"] for row in _metrics(run)] == [1, 0]
    assert len(_asked(log)) == 4 + 1 + 2  # the refused item asked once more (max_retries=1), nothing else twice


def test_an_older_shard_holding_1e308_as_valid_is_left_out_of_the_fit_and_the_run_resumes(
    tiny_model, tmp_path, capsys, logging_oracle
):
    command, log = logging_oracle
    argv = loop_argv(tiny_model, tmp_path / "runs", command, rounds=1)
    assert _run(argv, capsys)[0] == 0
    run = tmp_path / "runs" / "run"
    shard_path = run / "data" / "round_0000.safetensors"
    with safe_open(str(shard_path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = _tensors(shard_path)
    tensors["rewards"][0] = 1e308  # what an older version kept: valid, and inf in float32
    assert tensors["valid"][0]
    save_file(tensors, str(shard_path), metadata=metadata)

    status, errors, _ = _run(argv + [f"--config.resume_from={run}", "--config.loop.num_rounds=2"], capsys)
    assert status == 0 and not errors, errors
    surrogate = load_surrogate(run / "round_0001" / "surrogate.safetensors")
    assert surrogate.n_data == 4 + 2 - 1  # every valid row but the one outside the float32 range
    assert len(_asked(log)) == 4 + 2


def test_a_fit_failing_in_a_later_round_keeps_the_previous_surrogate_and_the_run_completes(
    tiny_model, tmp_path, capsys, monkeypatch, logging_oracle
):
    command, log = logging_oracle
    failed = _fit_failing_once(monkeypatch, round_index=1)
    argv = loop_argv(tiny_model, tmp_path / "runs", command, rounds=3)
    status, errors, out = _run(argv + ["--config.smc.guidance=none"], capsys)  # unguided sampling: seconds
    assert status == 0 and not errors, errors
    assert failed == [1] and "round 1's surrogate fit failed" in out
    run = tmp_path / "runs" / "run"
    rows = _metrics(run)
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert "LinAlgError" in rows[1]["surrogate_fit"]["fit_failed"]
    assert rows[1]["surrogate_fit"]["kept_surrogate_of_round"] == 0
    assert "fit_failed" not in rows[0]["surrogate_fit"] and "fit_failed" not in rows[2]["surrogate_fit"]
    # round 1 keeps round 0's surrogate as it was saved (not the one the failed warm fit spoiled)
    kept, before = (_tensors(run / f"round_000{k}" / "surrogate.safetensors") for k in (1, 0))
    assert kept.keys() == before.keys() and all(torch.equal(kept[name], before[name]) for name in kept)
    last = load_surrogate(run / "round_0002" / "surrogate.safetensors")
    assert last.round == 2 and last.n_data == 4 + 2 + 2  # the next round fits on every answer again
    assert len(_asked(log)) == len(set(_asked(log))) == 4 + 2 + 2


def test_a_fit_that_returns_a_non_finite_model_is_a_failed_fit(
    tiny_model, tmp_path, capsys, monkeypatch, logging_oracle
):
    """A fit that returns normally but leaves a model predicting NaN (as rewards near the float32
    limit can) is caught before the model is saved or guides anything: round 1 keeps round 0's."""
    command, log = logging_oracle
    real = Surrogate.fit

    def spoiling(self, *args, **kwargs):
        info = real(self, *args, **kwargs)
        if kwargs.get("round") == 1:
            for parameter in self.net.parameters():
                parameter.data.fill_(float("nan"))
        return info

    monkeypatch.setattr(Surrogate, "fit", spoiling)
    argv = loop_argv(tiny_model, tmp_path / "runs", command, rounds=3)
    status, errors, out = _run(argv + ["--config.smc.guidance=none"], capsys)
    assert status == 0 and not errors, errors
    run = tmp_path / "runs" / "run"
    rows = _metrics(run)
    assert "non-finite" in rows[1]["surrogate_fit"]["fit_failed"] and "round 1's surrogate fit failed" in out
    kept, before = (_tensors(run / f"round_000{k}" / "surrogate.safetensors") for k in (1, 0))
    assert all(torch.equal(kept[name], before[name]) for name in kept)
    assert "fit_failed" not in rows[2]["surrogate_fit"] and len(_asked(log)) == len(set(_asked(log))) == 8


def test_a_fit_failing_in_round_0_ends_in_one_line_and_a_resume_completes_without_asking_again(
    tiny_model, tmp_path, capsys, monkeypatch, logging_oracle
):
    command, log = logging_oracle
    failed = _fit_failing_once(monkeypatch, round_index=0)
    argv = loop_argv(tiny_model, tmp_path / "runs", command)
    status, errors, _ = _run(argv, capsys)
    run = tmp_path / "runs" / "run"
    assert status == 1 and len(errors) == 1 and failed == [0], errors
    assert "Round 0's surrogate fit failed" in errors[0] and f"--config.resume_from={run}" in errors[0]
    assert len(_asked(log)) == 4 and (run / "data" / "round_0000.safetensors").is_file()

    status, errors, _ = _run(argv + [f"--config.resume_from={run}"], capsys)
    assert status == 0 and not errors, errors
    assert [row["round"] for row in _metrics(run)] == [0, 1]
    assert len(_asked(log)) == len(set(_asked(log))) == 4 + 2  # the resume asked nothing of round 0 again
