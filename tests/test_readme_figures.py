"""The README's figures are the ones their files give: the `make demo` sentence from
``benchmarks/results/demo.json`` and the which-method table from ``benchmarks/results/online.json``."""

from __future__ import annotations

import json

from benchmarks import bench_online, demo_figures
from tests import REPO_ROOT


def between(text: str, start: str, end: str) -> str:
    begin = text.index(start) + len(start)
    return text[begin : text.index(end, begin)].strip()


def test_the_demo_sentence_is_the_one_demo_json_gives():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    figures = json.loads((REPO_ROOT / "benchmarks" / "results" / "demo.json").read_text())
    assert between(readme, demo_figures.README_START, demo_figures.README_END) == demo_figures.sentence(figures)


def test_the_which_method_table_is_the_one_online_json_gives():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    payload = json.loads((REPO_ROOT / "benchmarks" / "results" / "online.json").read_text())
    assert payload["status"] == "complete"
    assert between(readme, bench_online.README_START, bench_online.README_END) == bench_online.readme_table(payload)
    assert payload["default_method"] in bench_online.METHODS


def test_the_demo_figures_are_read_from_a_run(tmp_path):
    run, evaluation = tmp_path / "demo", tmp_path / "demo-evaluate"
    run.mkdir()
    evaluation.mkdir()
    rows = [
        {"round": 0, "queries_total": 48, "true_reward": {"mean": -1.08}, "seconds": {"total": 30.0}},
        {"round": 1, "queries_total": 64, "true_reward": {"mean": -1.01}, "seconds": {"total": 60.0}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(
        json.dumps({"method": "", "surrogate": {"kind": "gp"}, "oracle": {"kind": "jpeg"}})
    )
    scored = {"num_images": 18, "true_reward": {"mean": -1.02, "std": 0.05}}
    (evaluation / "metrics.json").write_text(json.dumps(scored))
    figures = demo_figures.read_demo(run, evaluation)
    assert figures["run_seconds"] == 90.0 and figures["config"] == {"method": "gp", "oracle": "jpeg"}
    text = demo_figures.sentence(figures)
    assert "from −1.080 (pretrained, round 0) to −1.010 in round 1 (64 queries)" in text
    assert "−1.020 ± 0.050 (mean ± std of 18 images)" in text and "1.5 min" in text
