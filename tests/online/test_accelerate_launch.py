"""``accelerate launch`` with two CPU processes: two loop rounds, then evaluate mode on the result.

Both runs go through accelerate's own launcher in one launch (a small driver calls the entry
point twice, so the processes start once): only the main process asks the oracle and writes.
With accelerate 1.x, ``--cpu`` starts a single process; ``--multi_gpu --num_processes 2`` on a
machine without GPUs starts two (torchrun underneath), and ``--config.device=cpu`` makes them
gloo ranks on the CPU.
"""

import json
import os
import socket
import subprocess
import sys

from online.run_directory import complete_rounds, load_dataset
from online.storage import AnswerJournal
from tests.online.online_helpers import LOGGING_ORACLE, REPO, loop_argv

DRIVER = """
import json, os, sys
from pathlib import Path
from online.online_main_smc import main

rank, world = os.environ.get("RANK", "0"), int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
Path(sys.argv[1], f"rank_{rank}.json").write_text(json.dumps({"world": world}))
train, evaluate = json.loads(sys.argv[2]), json.loads(sys.argv[3])
status = main(train)
sys.exit(status or main(evaluate))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_accelerate_launch_runs_two_rounds_on_two_processes_and_evaluates(tiny_model, tmp_path):
    script = tmp_path / "oracle.py"
    script.write_text(LOGGING_ORACLE)
    train_log, eval_log = tmp_path / "asked_train.log", tmp_path / "asked_eval.log"
    out = tmp_path / "runs"
    train = loop_argv(tiny_model, out, (sys.executable, str(script), str(train_log)), run_name="launched", rounds=2)
    evaluate = loop_argv(tiny_model, out, (sys.executable, str(script), str(eval_log)), run_name="launched-evaluate")
    evaluate += ["--config.mode=evaluate", f"--config.reward_model_path={out / 'launched' / 'round_0001'}"]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(driver),
        str(tmp_path),
        json.dumps(train),
        json.dumps(evaluate),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    # two processes, started by accelerate's launcher
    ranks = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("rank_*.json")}
    assert ranks == {"rank_0.json": {"world": 2}, "rank_1.json": {"world": 2}}

    # training: 4 + 2 queries, each asked once, by the main process only
    run_dir = out / "launched"
    assert complete_rounds(run_dir) == [0, 1]
    asked = train_log.read_text().splitlines()
    assert len(asked) == 6 and len(set(asked)) == 6
    data, _, rounds = load_dataset(run_dir)
    assert data["features"].shape[0] == 6 and rounds.tolist() == [0, 0, 0, 0, 1, 1] and bool(data["valid"].all())
    for k, size in ((0, 4), (1, 2)):
        lines = (run_dir / f"round_{k:04d}" / "answers.jsonl").read_text().splitlines()
        assert len(lines) == size and sorted(
            AnswerJournal(run_dir / f"round_{k:04d}" / "answers.jsonl").read()
        ) == list(range(size))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["queries_total"] for row in metrics] == [4, 6]
    assert done.stdout.count("Run directory:") == 1  # the summary is printed by the main process only

    # evaluate mode on round 1's surrogate: both processes sample, the main one asks and writes
    evaluation = json.loads((out / "launched-evaluate" / "metrics.json").read_text())
    assert evaluation["num_images"] == 2 and evaluation["failed_queries"] == 0
    assert len(eval_log.read_text().splitlines()) == 2
    assert len(list((out / "launched-evaluate" / "images").glob("*.png"))) == 2
    assert done.stdout.count("Evaluation of") == 1
