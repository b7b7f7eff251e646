"""The run directory's layout and seeds: the paths and formats of existing runs are kept."""

import json

import torch

from online.run_directory import RunFiles
from online.seeds import STREAMS, rng_record, stream_seed


def test_the_layout_is_the_one_existing_runs_have(tmp_path):
    files = RunFiles(tmp_path)
    round_3 = files.round(3)
    assert round_3.path == tmp_path / "round_0003"
    assert round_3.shard_path == tmp_path / "data" / "round_0003.safetensors"
    assert round_3.batch_path == tmp_path / "round_0003" / "batch.safetensors"
    assert round_3.surrogate_path == tmp_path / "round_0003" / "surrogate.safetensors"
    assert round_3.journal.path == tmp_path / "round_0003" / "answers.jsonl"
    assert round_3.metrics_path == tmp_path / "round_0003" / "metrics.json"
    assert (files.config_path, files.metrics_lines_path) == (tmp_path / "config.json", tmp_path / "metrics.jsonl")
    assert files.image_name(7) == "images/0007.png"


def test_a_round_stages_answers_and_encodes_its_shard(tmp_path):
    files = RunFiles(tmp_path)
    round_0 = files.round(0)
    batch = {
        "images": torch.tensor([0.0, 0.5, 1.0]).reshape(3, 1, 1, 1).expand(3, 3, 2, 2).clone(),
        "features": torch.arange(6.0).reshape(3, 2),
        "prompts": ["a", "b", "c"],
        "ess_fraction": torch.tensor([0.5, 1.0]),
        "log_normalizer": torch.tensor([1.0, 3.0]),
    }
    round_0.save_batch(batch)
    assert round_0.has_batch() and not round_0.has_shard() and round_0.unanswered(3) == [0, 1, 2]
    round_0.journal.append([{"index": 1, "status": "ok", "reward": 0.25, "true_reward": 0.5}])
    round_0.journal.append([{"index": 0, "status": "failed", "reward": None, "true_reward": None}])
    round_0.journal.append([{"index": 2, "status": "ok", "reward": 1.5, "true_reward": 1.0}])
    assert round_0.unanswered(3) == []
    staged, prompts = round_0.load_batch()
    round_0.write_shard(staged, prompts)
    round_0.drop_batch()
    assert not round_0.has_batch() and round_0.has_shard()
    rows, prompts = round_0.load_shard()
    assert prompts == ["a", "b", "c"] and rows["valid"].tolist() == [False, True, True]
    assert rows["images"].dtype == torch.uint8 and rows["images"][:, 0, 0, 0].tolist() == [0, 128, 255]
    assert rows["rewards"][1:].tolist() == [0.25, 1.5] and torch.isnan(rows["true_rewards"][0])
    assert round_0.shard_stats() == {"ess_fraction": 0.75, "log_normalizer": 2.0}
    data, all_prompts, rounds = files.load_dataset()
    assert all_prompts == prompts and rounds.tolist() == [0, 0, 0] and torch.equal(data["valid"], rows["valid"])
    assert files.complete_rounds() == []
    round_0.write_metrics({"round": 0})
    round_0.mark_complete()
    assert files.complete_rounds() == [0] and round_0.read_metrics() == {"round": 0}


def test_stream_seeds_are_the_ones_runs_recorded():
    seed = 12345
    # the training streams, as runs record them in rng.json
    assert stream_seed(seed, 3, "fit", 1) == (seed * 1_000_003 + 3 * 10_007 + 4 * 101 + 1) % 2**62
    # the evaluation's generator, as it has always been seeded
    assert stream_seed(seed, 0, "evaluate", 2) == seed * 1_000_003 + 7_777 + 2
    record = rng_record(seed, 3, 2)
    assert set(record["streams"]) == set(STREAMS) and record["sample_per_rank"] == [
        stream_seed(seed, 3, "sample", r) for r in range(2)
    ]
    json.dumps(record)


# -- overwrite: the new run is whole and locked before the old one is set aside and deleted --------------
def _old_run(output_dir):
    from dasapp.run_dirs import write_marker
    from online.run_directory import TRAIN_KIND

    old = output_dir / "run"
    (old / "data").mkdir(parents=True)
    write_marker(old, TRAIN_KIND)
    (old / "data" / "round_0000.safetensors").write_bytes(b"paid answers")
    return old


def _directory(output_dir):
    from online.run_directory import TRAIN_KIND, RunDirectory

    return RunDirectory(output_dir / "run", output_dir, TRAIN_KIND, "run")


def _assert_locked(path):
    import pytest

    from dasapp.run_dirs import DirectoryLock, RunDirError

    with pytest.raises(RunDirError, match="in use"):
        DirectoryLock(path).acquire()


def test_an_overwrite_deletes_the_old_run_only_after_the_new_one_is_locked_in_place(tmp_path, monkeypatch):
    import online.run_directory as module

    old = _old_run(tmp_path)
    seen = {}
    real_remove = module.remove_aside

    def remove(aside, kind):  # the state of things at the moment the old run is deleted
        seen["aside_holds_old"] = (aside / "run" / "data" / "round_0000.safetensors").read_bytes()
        seen["new_config"] = json.loads((old / "config.json").read_text())
        _assert_locked(old)
        real_remove(aside, kind)

    monkeypatch.setattr(module, "remove_aside", remove)
    run = _directory(tmp_path)
    run.lock()
    run.create(True, {"seed": 7})
    assert seen == {"aside_holds_old": b"paid answers", "new_config": {"seed": 7}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no folder set aside is left"
    assert not (old / "data").exists()
    from dasapp.run_dirs import process_umask

    assert old.stat().st_mode & 0o777 == 0o777 & ~process_umask(), "the new run has a plain folder's permissions"
    _assert_locked(old)
    run.release()


def test_an_overwrite_that_fails_at_the_swap_puts_the_old_run_back(tmp_path, monkeypatch):
    import pytest

    import online.run_directory as module

    old = _old_run(tmp_path)
    real_replace = module.os.replace

    def failing(source, target):
        if ".new." in str(source):
            raise OSError(28, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr(module.os, "replace", failing)
    run = _directory(tmp_path)
    run.lock()
    with pytest.raises(OSError):
        run.create(True, {"seed": 7})
    run.release()
    assert (old / "data" / "round_0000.safetensors").read_bytes() == b"paid answers"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing set aside or half-made is left"


def test_a_foreign_folder_set_aside_by_name_is_never_deleted(tmp_path):
    import pytest

    from dasapp.run_dirs import RunDirError, remove_aside

    folder = tmp_path / ".run.old.abc.tmp"
    (folder / "run").mkdir(parents=True)
    (folder / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="does not hold exactly one"):
        remove_aside(folder, "online-train")
    assert (folder / "run" / "notes.txt").read_text() == "mine"
