"""Offline analysis of saved runs: figures, a summary table and one self-contained HTML report.

    python -m online.analysis runs/UCB-seed0 runs/UCB-seed1 runs/Greedy-seed0 --out reports/compare

It reads run directories only (``config.json``, ``metrics.jsonl``, the data shards and the
round checkpoints), groups runs by oracle and method (from their configs, never from folder
names) and by seed, and writes into ``--out``:

* ``reward_vs_queries.png``: the true reward of each round's batch against the queries
  spent, mean and 95% interval over seeds per method, with the best true reward found so far;
* ``diversity.png``, ``sampler.png`` (ESS fraction and log-normalizer per round);
* per-round figures (the next three) show the mean over seeds per method, one column per oracle;
* ``overoptimization.png``: what the previous round's surrogate predicted for each queried
  batch against its true reward (a growing gap is reward hacking of the surrogate);
* ``calibration.png``: coverage of each round's true rewards by the previous round's
  surrogate intervals at 50/80/95%, and the rank correlation;
* ``cross_reward.png``: the cheap oracles the run did not optimize (JPEG size,
  colourfulness, rare colour), measured on the queried images, to show what optimization
  costs elsewhere;
* ``grid_<run>.png``: the queried images of the first, middle and last rounds of the
  lowest seed of each (oracle, method);
* ``summary.csv`` and ``summary.md``: one row per (oracle, method);
* ``report.html``: all of the above in one file, images embedded, that opens offline.

A missing or corrupt file in a run is reported as one line naming the file (on standard
error and in the report), and everything else is still written. The loop writes the same
report for its own run at the end (``<run_dir>/report/``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

METHOD_NAMES = {"ucb": "UCB", "bootstrap": "Bootstrap", "gp": "GP", "greedy": "Greedy"}  # greedy: runs before 0.2
#: Methods named by their surrogate kind and optimistic acquisition (``acquisition.kind``), when not the kind's own.
ACQUISITION_METHOD_NAMES = {("ucb", "mean"): "Greedy"}
REFERENCE_NAMES = {"none": "Pretrained", "oracle": "Ceiling"}
CROSS_ORACLES = ("jpeg", "colorfulness", "rare")
NOMINAL = (0.5, 0.8, 0.95)


@dataclass
class Run:
    """What the analysis knows about one run directory."""

    path: Path
    config: dict
    rows: list[dict]  # metrics.jsonl, one per complete round
    rounds: list[dict] = field(default_factory=list)  # per-round details computed from shards and checkpoints
    problems: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        """The method, from the config: its ``method`` name when given, else ``Pretrained``
        (guidance none), ``Ceiling`` (guidance by the true oracle), or the surrogate (``Greedy``
        for the UCB surrogate's mean as its optimistic acquisition), and the guidance when not
        optimistic."""
        if str(self.config.get("method", "")).strip():
            return str(self.config["method"]).strip()
        guidance = self.config.get("smc", {}).get("guidance", "optimistic")
        if guidance in REFERENCE_NAMES:
            return REFERENCE_NAMES[guidance]
        kind = self.config.get("surrogate", {}).get("kind", "?")
        acquisition = self.config.get("acquisition", {}).get("kind")
        name = ACQUISITION_METHOD_NAMES.get((kind, acquisition)) or METHOD_NAMES.get(kind, kind)
        return name if guidance == "optimistic" else f"{name} ({guidance})"

    @property
    def oracle(self) -> str:
        return str(self.config.get("oracle", {}).get("kind", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def label(self) -> str:
        return f"{self.oracle}-{self.method}-seed{self.seed}".replace(" ", "").replace("(", "-").replace(")", "")


# ---------------------------------------------------------------------------- reading
def load_run(path: Path, details: bool = True) -> Run | None:
    """Reads one run directory; returns None (with a line on stderr) when it has no config.

    Args:
        path: the run directory.
        details: also compute the per-round details (surrogate predictions, calibration,
            cross rewards) from the shards and checkpoints.
    """
    from online.run_directory import RunFiles

    files = RunFiles(path)
    try:
        config = json.loads(files.config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        _warn(f"{files.config_path}: unreadable ({_short(error)}); run left out.")
        return None
    run = Run(files.path, config, [])
    try:
        lines = files.metrics_lines_path.read_text(encoding="utf-8").splitlines()
        run.rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as error:
        run.problems.append(f"{files.metrics_lines_path}: unreadable ({_short(error)}); its curves are left out.")
    if details:
        run.rounds = [_round_details(run, row["round"]) for row in run.rows]
    for problem in run.problems:
        _warn(problem)
    return run


def _round_details(run: Run, k: int) -> dict:
    """Surrogate prediction and calibration on round `k`'s answers, and the cross rewards."""
    from online.run_directory import RunFiles
    from online.storage import decode_images

    detail: dict = {"round": k}
    files = RunFiles(run.path)
    shard = files.round(k).shard_path
    try:
        rows, _ = files.round(k).load_shard()
    except Exception as error:  # noqa: BLE001 - safetensors raises its own types on corrupt files
        run.problems.append(f"{shard}: unreadable ({_short(error)}); round {k} details left out.")
        return detail
    valid = rows["valid"].bool()
    true = rows["true_rewards"].double()[valid]
    observed = rows["rewards"].double()[valid]
    images = decode_images(rows["images"][valid])
    detail["cross"] = _cross_rewards(images, run.oracle)
    detail["images"] = rows["images"]
    if k == 0 or int(valid.sum()) == 0:
        return detail
    checkpoint = files.round(k - 1).surrogate_path
    try:
        from surrogate import calibration_metrics, load_surrogate

        surrogate = load_surrogate(checkpoint)
        features = rows["features"][valid].float()
        with torch.no_grad():
            predicted = surrogate.mean(features).double()
        # the answers the loop saw (with label noise) against the predictive intervals (epistemic + noise)
        scores = calibration_metrics(surrogate, features, observed)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is one line, not the end of the report
        run.problems.append(f"{checkpoint}: unreadable ({_short(error)}); round {k} calibration left out.")
        return detail
    detail["predicted_mean"] = float(predicted.mean())
    detail["true_mean"] = float(true.mean())
    detail["coverage"] = {str(p): scores[f"coverage_{round(100 * p)}"] for p in NOMINAL}
    detail["spearman"] = scores["spearman"]
    return detail


def _cross_rewards(images: torch.Tensor, optimized: str) -> dict[str, float]:
    from das.rewards.colorfulness import ColorfulnessReward
    from das.rewards.jpeg import JPEGCompressibility
    from world.oracles import RareColourReward

    oracles = {"jpeg": JPEGCompressibility(), "colorfulness": ColorfulnessReward(), "rare": RareColourReward()}
    if images.shape[0] == 0:
        return {}
    with torch.no_grad():
        return {name: float(oracles[name](images).double().mean()) for name in CROSS_ORACLES if name != optimized}


# ---------------------------------------------------------------------------- summary
def group(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (oracle, method), each group sorted by seed, one run per seed: a second run of a seed already
    in its group is left out with a warning line (the same seed twice is not two independent samples)."""
    groups: dict[tuple[str, str], dict[int, Run]] = {}
    for run in runs:
        members = groups.setdefault((run.oracle, run.method), {})
        if run.seed in members:
            _warn(
                f"{run.path} is seed {run.seed} of {run.oracle}/{run.method} again (as {members[run.seed].path}); "
                "it is left out: the same seed twice is not two independent samples."
            )
            continue
        members[run.seed] = run
    return {key: [value[seed] for seed in sorted(value)] for key, value in sorted(groups.items())}


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a loop run (its ``config.json`` and ``metrics.jsonl``)."""
    return (path / "config.json").is_file() and (path / "metrics.jsonl").is_file()


def expand_run_dirs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``(runs, empty)``: each path that is a run, or the runs directly inside a folder given instead
    (``python -m online.analysis runs``); `empty` lists the paths that are neither."""
    runs, empty = [], []
    for path in paths:
        if is_run_dir(path):
            runs.append(path)
            continue
        inside = sorted(child for child in path.iterdir() if child.is_dir() and is_run_dir(child))
        (runs.extend(inside) if inside else empty.append(path))
    return runs, empty


def summary_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per (oracle, method): final true reward over seeds (mean, standard error) and more."""
    table = []
    for (oracle, method), members in group(runs).items():
        finished = [r for r in members if r.rows]
        finals = np.array([r.rows[-1]["true_reward"]["mean"] for r in finished], dtype=float)
        best = np.array([max(row["true_reward"]["max"] for row in r.rows) for r in finished], dtype=float)
        diversity = np.array([r.rows[-1]["diversity"] for r in finished], dtype=float)
        coverage = [_coverage_95(r) for r in finished]
        coverage = [c for per_run in coverage for c in per_run]
        table.append(
            {
                "oracle": oracle,
                "method": method,
                "seeds": sorted(r.seed for r in finished),
                "queries": int(np.median([r.rows[-1]["queries_total"] for r in finished])) if finished else 0,
                "final_true_reward_mean": _mean(finals),
                "final_true_reward_se": _se(finals),
                "best_true_reward_mean": _mean(best),
                "final_diversity_mean": _mean(diversity),
                "coverage_95_mean": _mean(np.array(coverage, dtype=float)),
            }
        )
    return table


def _coverage_95(run: Run) -> list[float]:
    """Per round, the share of its answers inside the previous surrogate's 95% intervals: from the
    checkpoints when the details were computed, else as the loop recorded it in ``metrics.jsonl``."""
    if run.rounds:
        return [d["coverage"]["0.95"] for d in run.rounds if "coverage" in d]
    return [
        row["calibration"]["coverage_95"]
        for row in run.rows
        if (row.get("calibration") or {}).get("coverage_95") is not None
    ]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan


# ---------------------------------------------------------------------------- figures
def _curves(members: Sequence[Run], value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (queries), mean and 95% half-width over seeds of `value(row)`, on the rounds all seeds have."""
    finished = [r for r in members if r.rows]
    depth = min(len(r.rows) for r in finished)
    x = np.array([finished[0].rows[i]["queries_total"] for i in range(depth)], dtype=float)
    y = np.array([[_num(value(r.rows[i])) for i in range(depth)] for r in finished], dtype=float)
    mean = np.nanmean(y, axis=0)
    half = 1.96 * np.nanstd(y, axis=0, ddof=1) / math.sqrt(len(finished)) if len(finished) > 1 else np.zeros(depth)
    return x, mean, half


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _plot_by_method(runs, path: Path, value, ylabel: str, title: str, best=None) -> Path | None:
    import matplotlib.pyplot as plt

    groups = {key: [r for r in members if r.rows] for key, members in group(runs).items()}
    groups = {key: members for key, members in groups.items() if members}
    if not groups:
        return None
    oracles = sorted({oracle for oracle, _ in groups})
    fig, axes = plt.subplots(1, len(oracles), figsize=(6 * len(oracles), 4), squeeze=False)
    for ax, oracle in zip(axes[0], oracles):
        for (o, method), members in groups.items():
            if o != oracle:
                continue
            x, mean, half = _curves(members, value)
            line = ax.plot(x, mean, "o-", label=f"{method} (n={len(members)})")[0]
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2)
            if best is not None:
                bx, bmean, _ = _curves(members, best)
                ax.plot(bx, np.maximum.accumulate(bmean), "--", color=line.get_color(), alpha=0.7)
        ax.set_title(f"{title}: {oracle}" + (" (dashed: best so far)" if best is not None else ""))
        ax.set_xlabel("oracle queries spent")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_per_round(runs, path: Path, panels: list[tuple[str, object]], title: str, nominal=None) -> Path | None:
    """Per round, the mean over seeds of each method's `value`; one column per oracle, one row
    per panel (name, detail -> value or dict of values; a dict gives one row per key)."""
    import matplotlib.pyplot as plt

    groups = group(runs)
    oracles = sorted({oracle for oracle, _ in groups})
    rows: list[tuple[str, str, object]] = []  # (panel name, key or "", getter)
    for name, getter in panels:
        keys = sorted({key for run in runs for d in run.rounds if isinstance(getter(d), dict) for key in getter(d)})
        rows += [(name, key, getter) for key in keys] if keys else [(name, "", getter)]
    if not oracles:
        return None
    fig, axes = plt.subplots(len(rows), len(oracles), figsize=(5.5 * len(oracles), 3.6 * len(rows)), squeeze=False)
    drawn = False
    for r, (name, key, getter) in enumerate(rows):
        for c, oracle in enumerate(oracles):
            ax = axes[r][c]
            for (o, method), members in groups.items():
                if o != oracle:
                    continue
                per_round: dict[int, list[float]] = {}
                for run in members:
                    for d in run.rounds:
                        value = getter(d)
                        value = value.get(key) if isinstance(value, dict) else value
                        if value is not None and math.isfinite(float(value)):
                            per_round.setdefault(d["round"], []).append(float(value))
                if per_round:
                    ks = sorted(per_round)
                    ax.plot(ks, [float(np.mean(per_round[k])) for k in ks], "o-", label=f"{method} (n={len(members)})")
                    drawn = True
            if nominal and name in nominal and key:
                ax.axhline(float(key), color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"{oracle}: {name}" + (f" {key}" if key else ""), fontsize=9)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.suptitle(title)
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _grid(run: Run, path: Path) -> Path | None:
    from das.images import image_grid, save_png

    with_images = [d for d in run.rounds if "images" in d and d["images"].shape[0]]
    if not with_images:
        return None
    picks = sorted({0, len(with_images) // 2, len(with_images) - 1})
    rows = []
    width = max(int(with_images[i]["images"].shape[0]) for i in picks)
    width = min(width, 16)
    for i in picks:
        images = with_images[i]["images"][:width].movedim(1, -1).numpy()
        if images.shape[0] < width:
            images = np.concatenate([images, np.zeros((width - images.shape[0], *images.shape[1:]), np.uint8)])
        rows.append(images)
    grid = image_grid(np.concatenate(rows), columns=width)
    scale = max(1, 96 // rows[0].shape[1])  # small images (the embedded world's 32 px) are enlarged to be seen
    save_png(grid.repeat(scale, axis=0).repeat(scale, axis=1), path)
    return path


# ---------------------------------------------------------------------------- report
def write_report(run_dirs: Sequence[Path], out: Path, title: str = "Online runs") -> dict[str, Path]:
    """Analyses `run_dirs` and writes every figure, the tables and ``report.html`` into `out`.

    Returns:
        name -> path of what was written.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run for run in (load_run(Path(p)) for p in run_dirs) if run is not None]
    written = {name: path for name, path in _figures(runs, out).items() if path is not None}
    table = summary_rows(runs)
    written["summary_csv"] = _write_csv(table, out / "summary.csv")
    written["summary_md"] = _write_markdown(table, out / "summary.md")
    written["report"] = _write_html(runs, table, written, out / "report.html", title)
    return written


def _figures(runs: Sequence[Run], out: Path) -> dict[str, Path | None]:
    """Every figure of the report, by name, in the report's order (None: nothing to draw)."""
    figures = {
        "reward_vs_queries": _plot_by_method(
            runs,
            out / "reward_vs_queries.png",
            lambda r: r["true_reward"]["mean"],
            "true reward of the round's batch (mean)",
            "reward",
            best=lambda r: r["true_reward"]["max"],
        ),
        "diversity": _plot_by_method(
            runs, out / "diversity.png", lambda r: r["diversity"], "batch diversity", "diversity"
        ),
        "sampler": _plot_by_method(runs, out / "sampler.png", lambda r: r.get("ess_fraction"), "final ESS / K", "ESS"),
        **_per_round_figures(runs, out),
    }
    for members in group(runs).values():  # the lowest seed of each method keeps report.html small
        run = members[0]
        figures[f"grid_{run.label}"] = _grid(run, out / f"grid_{run.label}.png")
    return figures


def _per_round_figures(runs: Sequence[Run], out: Path) -> dict[str, Path | None]:
    """The figures of the per-round details: over-optimization, calibration, cross rewards."""
    overoptimization = (
        "surrogate predicted − true reward of the queried batch",
        lambda d: d["predicted_mean"] - d["true_mean"] if "predicted_mean" in d else None,
    )
    return {
        "overoptimization": _plot_per_round(
            runs,
            out / "overoptimization.png",
            [overoptimization],
            "over-optimization (previous round's surrogate on this round's batch)",
        ),
        "calibration": _plot_per_round(
            runs,
            out / "calibration.png",
            [("coverage", lambda d: d.get("coverage")), ("Spearman rank correlation", lambda d: d.get("spearman"))],
            "calibration of the previous round's surrogate on this round's answers",
            nominal={"coverage": NOMINAL},
        ),
        "cross_reward": _plot_per_round(
            runs,
            out / "cross_reward.png",
            [("oracles not optimized (batch mean)", lambda d: d.get("cross") or None)],
            "cross rewards on the queried images",
        ),
    }


COLUMNS = (
    "oracle",
    "method",
    "seeds",
    "queries",
    "final_true_reward_mean",
    "final_true_reward_se",
    "best_true_reward_mean",
    "final_diversity_mean",
    "coverage_95_mean",
)


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _write_csv(table: list[dict], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in table:
            writer.writerow([_cell(row[c]) for c in COLUMNS])
    return path


def _write_markdown(table: list[dict], path: Path) -> Path:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in table]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_html(runs: Sequence[Run], table: list[dict], figures: dict[str, Path], path: Path, title: str) -> Path:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in COLUMNS) + "</tr>" for row in table
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%;margin:1em 0}"
        ".problems{color:#a00}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(runs)} run(s): " + ", ".join(html.escape(f"{r.label} ({r.path})") for r in runs) + "</p>",
        f"<h2>Summary</h2><table><tr>{head}</tr>{body}</table>",
    ]
    problems = [p for r in runs for p in r.problems]
    if problems:
        parts.append(
            "<h2>Problems</h2><ul class='problems'>"
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul>"
        )
    for name, figure in figures.items():
        if figure.suffix == ".png":
            data = base64.b64encode(figure.read_bytes()).decode("ascii")
            parts.append(
                f"<h2>{html.escape(name.replace('_', ' '))}</h2><img alt='{html.escape(name)}' "
                f"src='data:image/png;base64,{data}'>"
            )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m online.analysis",
        description="Compare saved online runs: reward vs queries over seeds, diversity, over-optimization, "
        "calibration, cross rewards, image grids, a summary table and one self-contained report.html.",
        epilog="Example: python -m online.analysis runs/UCB-s0 runs/UCB-s1 runs/Greedy-s0 --out reports/cmp",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run directories, or folders of them (e.g. runs/), each run with config.json",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures, tables and report.html")
    parser.add_argument("--title", default="Online runs", help="the report's title")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.runs if not p.is_dir()]
    if missing:
        print(f"error: not a run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {str(args.out)!r} is a file; give a folder.", file=sys.stderr)
        return 2
    runs, empty = expand_run_dirs(args.runs)
    if empty:
        names = ", ".join(str(p) for p in empty)
        print(
            f"error: no run in {names} (a run directory holds config.json and metrics.jsonl; a folder given "
            "instead is read for the runs directly inside it).",
            file=sys.stderr,
        )
        return 2
    written = write_report(runs, args.out, args.title)
    print(f"Wrote {written['report']} ({len(written)} files in {args.out}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
