"""The README's `make demo` figures, read from the demo's run directories (never typed by hand).

Run after ``make demo``: ``.venv/bin/python -m benchmarks.demo_figures`` reads ``runs/demo`` and
``runs/demo-evaluate``, writes ``benchmarks/results/demo.json`` and copies the run's reward plot to
``docs/images/demo_reward_vs_queries.png``; ``--update-readme`` also rewrites the sentence between
the README's demo markers. ``tests/test_readme_figures.py`` checks that the README holds the
sentence this file's JSON gives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from atomicfile import atomic_write_text
from benchmarks.common import replace_between_markers

REPO = Path(__file__).resolve().parents[1]
README_START = "<!-- demo figures (python -m benchmarks.demo_figures --update-readme) -->"
README_END = "<!-- /demo figures -->"


def read_demo(run: Path, evaluation: Path) -> dict:
    """The demo's figures: per-round true reward, seconds, and evaluate mode's score."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{run / 'metrics.jsonl'} holds no complete round; run `make demo` first.")
    config = json.loads((run / "config.json").read_text())
    scored = json.loads((evaluation / "metrics.json").read_text())
    return {
        "config": {"method": config.get("method") or config["surrogate"]["kind"], "oracle": config["oracle"]["kind"]},
        "rounds": [
            {"round": r["round"], "queries_total": r["queries_total"], "true_reward_mean": r["true_reward"]["mean"]}
            for r in rows
        ],
        "run_seconds": sum(r["seconds"]["total"] for r in rows),
        "evaluate": {
            "num_images": scored["num_images"],
            "true_reward_mean": scored["true_reward"]["mean"],
            "true_reward_std": scored["true_reward"]["std"],
        },
    }


def sentence(figures: dict) -> str:
    """The README's sentence for ``figures`` (what :func:`read_demo` returns)."""
    first, last = figures["rounds"][0], figures["rounds"][-1]
    scored = figures["evaluate"]
    return (
        "In the run behind `benchmarks/results/demo.json` the batch's true reward (negated JPEG kB) went "
        f"from {first['true_reward_mean']:.3f} "
        f"(pretrained, round 0) to {last['true_reward_mean']:.3f} in round {last['round']} "
        f"({last['queries_total']} queries), and evaluate mode scored {scored['true_reward_mean']:.3f} "
        f"± {scored['true_reward_std']:.3f} (mean ± std of {scored['num_images']} images); the loop's rounds "
        f"took {figures['run_seconds'] / 60:.1f} min on this machine's 2 cores."
    ).replace("-", "−")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_figures", description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(REPO / "runs" / "demo"), help="the demo's run directory")
    p.add_argument("--evaluation", default=str(REPO / "runs" / "demo-evaluate"), help="its evaluation directory")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo.json"), help="the JSON to write")
    p.add_argument("--update-readme", action="store_true", help="rewrite the README's demo sentence")
    args = p.parse_args(argv)
    try:
        figures = read_demo(Path(args.run), Path(args.evaluation))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read the demo's figures: {error}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, json.dumps(figures, indent=2))
    plot = Path(args.run) / "reward_vs_queries.png"
    if plot.is_file():
        shutil.copyfile(plot, REPO / "docs" / "images" / "demo_reward_vs_queries.png")
    print(sentence(figures))
    if args.update_readme and not replace_between_markers(
        REPO / "README.md", README_START, README_END, sentence(figures)
    ):
        print(f"error: README.md has no {README_START!r} … {README_END!r} markers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
