"""The fault policy and the external-command oracle."""

import math
import sys
import time

import torch

from online.oracles import ExternalCommandOracle, QueryPolicy, query_with_retries


def _collect():
    rows = []
    return rows, rows.extend


def test_raising_and_nan_items_are_retried_then_recorded_as_failed():
    calls = []

    def flaky(images, prompts):
        calls.append(list(prompts))
        if len(calls) == 1:
            raise RuntimeError("instrument offline")
        values = [float(p) for p in prompts]
        return torch.tensor([math.nan if p == "3" else v for p, v in zip(prompts, values)])

    images = torch.zeros(5, 3, 4, 4)
    prompts = [str(i) for i in range(5)]
    rows, keep = _collect()
    query_with_retries(flaky, images, prompts, range(5), QueryPolicy(max_retries=2), keep)
    by_index = {row["index"]: row for row in rows}
    assert sorted(by_index) == [0, 1, 2, 3, 4]
    assert by_index[3]["status"] == "failed" and by_index[3]["attempts"] == 3 and "non-finite" in by_index[3]["error"]
    assert all(by_index[i]["status"] == "ok" and by_index[i]["value"] == i for i in (0, 1, 2, 4))
    assert calls[1] == prompts and calls[2:] == [["3"]]  # only the bad item is asked again


def test_a_hanging_oracle_times_out_and_the_run_goes_on():
    def slow(images, prompts):
        time.sleep(5)
        return torch.zeros(len(prompts))

    rows, keep = _collect()
    start = time.perf_counter()
    query_with_retries(
        slow, torch.zeros(2, 3, 4, 4), ["a", "b"], [0, 1], QueryPolicy(max_retries=1, timeout_s=0.2), keep
    )
    assert time.perf_counter() - start < 3
    assert [row["status"] for row in rows] == ["failed", "failed"] and "timed out" in rows[0]["error"]


def test_answers_become_durable_per_call():
    seen = []
    rows, keep = _collect()

    def record(answers):
        seen.append([a["index"] for a in answers])
        keep(answers)

    query_with_retries(
        lambda im, p: torch.ones(len(p)),
        torch.zeros(5, 3, 4, 4),
        list("abcde"),
        range(5),
        QueryPolicy(batch_size=2),
        record,
    )
    assert seen == [[0, 1], [2, 3], [4]]


def test_external_command_reads_paths_and_prompts_and_prints_rewards(tmp_path):
    script = tmp_path / "rate.py"
    script.write_text(
        "import sys\n"
        "from PIL import Image\n"
        "for line in sys.stdin:\n"
        "    path, prompt = line.rstrip('\\n').split('\\t')\n"
        "    image = Image.open(path)\n"
        "    print(sum(image.getpixel((0, 0))) / 765 + len(prompt))\n"
    )
    oracle = ExternalCommandOracle([sys.executable, str(script)], timeout_s=60)
    images = torch.zeros(2, 3, 4, 4)
    images[1] = 1.0
    values = oracle(images, ["ab", "abc"])
    assert torch.allclose(values, torch.tensor([2.0, 4.0], dtype=torch.float64))


def test_the_noisy_oracle_adds_the_seeded_noise_of_each_item_whichever_call_answers_it():
    from online.oracles import NoisyOracle

    images = torch.rand(5, 3, 4, 4)
    truth = images.mean(dim=(1, 2, 3)).double()
    calls = []

    def inner(batch, prompts):
        calls.append(len(prompts))
        return batch.mean(dim=(1, 2, 3)).double()

    answers = {}
    noisy = NoisyOracle(inner, 0.1, seed=1234)
    noisy.ask(
        images,
        ["p"] * 5,
        [3, 0, 4],
        QueryPolicy(batch_size=2),
        lambda rows: answers.update({r["index"]: r for r in rows}),
    )
    noise = torch.randn(5, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    assert calls == [2, 1] and sorted(answers) == [0, 3, 4]
    for i, row in answers.items():
        assert row["true_reward"] == row["value"] == float(truth[i])
        assert row["reward"] == float(truth[i]) + 0.1 * float(noise[i])  # bit for bit: the loop's formula


def test_the_noisy_oracle_leaves_a_failed_item_without_a_reward():
    from online.oracles import NoisyOracle

    def broken(batch, prompts):
        raise RuntimeError("down")

    answers = []
    NoisyOracle(broken, 0.1, seed=0).ask(
        torch.rand(2, 3, 4, 4), ["a", "b"], [0, 1], QueryPolicy(max_retries=0), answers.extend
    )
    assert [(r["status"], r["reward"], r["true_reward"]) for r in answers] == [("failed", None, None)] * 2


# -- answers outside the float32 range the surrogate fits in (issue 23) -------------------------
def test_an_answer_outside_the_float32_range_is_retried_then_failed_never_stored():
    calls = []

    def huge(images, prompts):
        calls.append(list(prompts))
        table = {"a": 1e308, "b": 3.0e38, "c": -1e39, "d": 0.5}  # 3.0e38 is within float32, the others not
        return torch.tensor([table[p] for p in prompts], dtype=torch.float64)

    rows, keep = _collect()
    query_with_retries(huge, torch.zeros(4, 3, 4, 4), list("abcd"), range(4), QueryPolicy(max_retries=1), keep)
    by_index = {row["index"]: row for row in rows}
    assert calls == [list("abcd"), ["a", "c"]]  # only the refused items are asked again
    for i, shown in ((0, "1e+308"), (2, "-1e+39")):
        row = by_index[i]
        assert (row["status"], row["value"], row["attempts"]) == ("failed", None, 2)
        assert f"value {shown} outside the float32 range" in row["error"]
    assert by_index[1]["status"] == "ok" and torch.isfinite(torch.tensor(by_index[1]["value"], dtype=torch.float32))
    assert by_index[3]["status"] == "ok" and by_index[3]["value"] == 0.5


def test_an_answer_outside_the_float32_range_then_a_good_one_is_kept():
    answers = iter([1e308, 2.0])
    rows, keep = _collect()
    query_with_retries(
        lambda im, p: torch.tensor([next(answers)], dtype=torch.float64),
        torch.zeros(1, 3, 4, 4),
        ["a"],
        [0],
        QueryPolicy(),
        keep,
    )
    assert [(r["status"], r["value"], r["attempts"]) for r in rows] == [("ok", 2.0, 2)]


def test_an_item_by_item_answer_outside_the_float32_range_is_recorded_as_failed():
    class Rater:
        item_by_item = True

        def rate_items(self, images, prompts, indices, on_answers):
            for i, value in zip(indices, (1e308, 4.0)):
                on_answers([{"index": i, "value": value, "status": "ok", "attempts": 1, "error": ""}])

    rows, keep = _collect()
    query_with_retries(Rater(), torch.zeros(2, 3, 4, 4), ["a", "b"], [0, 1], QueryPolicy(), keep)
    assert [(r["status"], r["value"]) for r in rows] == [("failed", None), ("ok", 4.0)]
    assert "outside the float32 range" in rows[0]["error"]


def test_a_noisy_answer_outside_the_float32_range_is_recorded_as_failed():
    from online.oracles import NoisyOracle

    answers = []
    NoisyOracle(lambda im, p: torch.ones(len(p), dtype=torch.float64), 1e42, seed=0).ask(
        torch.rand(2, 3, 4, 4), ["a", "b"], [0, 1], QueryPolicy(), answers.extend
    )
    assert [(r["status"], r["reward"], r["true_reward"]) for r in answers] == [("failed", None, None)] * 2
    assert all("outside the float32 range" in r["error"] for r in answers)
