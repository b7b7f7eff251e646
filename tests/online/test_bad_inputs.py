"""Bad input, tried as a careless or unlucky user would: every case ends in one line and the
documented exit status (2: bad input; 1: failed while running), creates or deletes nothing
it should not, pays no query, and never executes checkpoint content.

Each case runs the real entry point (``online/online_main_smc.py``'s ``main``) in this
process, on the tiny random pixel model, with an external oracle that logs every item it is
asked about.
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from online.online_main_smc import main
from tests.online.online_helpers import REPO, loop_argv

SENTINEL = "pickle_payload_ran"


class _Payload:
    """Unpickling this creates a file: proof that a checkpoint's content was executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with size and mtime (lock files left out)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.name != ".lock"
    }


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):
    """A complete 2-round run (and its oracle log) made once; cases copy it."""
    root = tmp_path_factory.mktemp("finished")
    script = root / "oracle.py"
    from tests.online.online_helpers import LOGGING_ORACLE

    script.write_text(LOGGING_ORACLE)
    import sys

    command = (sys.executable, str(script), str(root / "asked.log"))
    assert main(loop_argv(tiny_model, root / "runs", command)) == 0
    return root / "runs" / "run", command


class Case:
    def __init__(self, name, args=(), setup=None, status=2, text="", creates=False, method="UCB"):
        self.name, self.args, self.setup, self.status, self.text = name, list(args), setup, status, text
        self.creates, self.method = creates, method

    def __repr__(self):
        return self.name


# -- setups: each gets (tmp_path, ctx) and returns extra command-line arguments -----------------
def _copy_run(tmp_path, ctx) -> Path:
    target = tmp_path / "runs" / "old"
    shutil.copytree(ctx["finished"], target)
    return target


def resume_of(mutate=None, extra=()):
    def setup(tmp_path, ctx):
        run = _copy_run(tmp_path, ctx)
        if mutate:
            mutate(run, tmp_path)
        return [f"--config.resume_from={run}", *extra]

    return setup


def existing_dir(content: str = "paid for", marker: dict | None = None, extra=()):
    def setup(tmp_path, ctx):
        target = tmp_path / "runs" / "run"
        target.mkdir(parents=True)
        (target / "precious.txt").write_text(content)
        if marker is not None:
            (target / "run.json").write_text(json.dumps(marker))
        return list(extra)

    return setup


def existing_run_overwritten(extra=()):
    def setup(tmp_path, ctx):
        run = _copy_run(tmp_path, ctx)
        run.rename(tmp_path / "runs" / "run")
        return ["--config.overwrite=True", *extra]

    return setup


def output_dir_is_file(tmp_path, ctx):
    (tmp_path / "afile").write_text("not a folder")
    return [f"--config.output_dir={tmp_path / 'afile'}"]


def foreign_resume(tmp_path, ctx):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    return [f"--config.resume_from={tmp_path / 'foreign'}"]


def copied_config_resume(tmp_path, ctx):
    """A user's folder holding notes and a copy of a run's config.json, but no run.json marker."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    shutil.copy(ctx["finished"] / "config.json", folder / "config.json")
    return [f"--config.resume_from={folder}"]


def output_dir_linked_into_a_run(tmp_path, ctx):
    """output_dir is a link to an existing run: a new run there would sit inside that run."""
    run = _copy_run(tmp_path, ctx)
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    return [f"--config.output_dir={tmp_path / 'link'}"]


def output_dir_below_a_run(tmp_path, ctx):
    run = _copy_run(tmp_path, ctx)
    return [f"--config.output_dir={run / 'sub'}"]


def run_with_a_run_inside(tmp_path, ctx):
    """An old run that (from before runs inside runs were refused) holds another run: overwrite refuses."""
    run = _copy_run(tmp_path, ctx)
    shutil.copytree(ctx["finished"], run / "inner")
    run.rename(tmp_path / "runs" / "run")
    return ["--config.overwrite=True"]


def locked_resume(tmp_path, ctx):
    from dasapp.run_dirs import DirectoryLock

    run = _copy_run(tmp_path, ctx)
    ctx["lock"] = DirectoryLock(run).acquire()  # another process resuming it
    return [f"--config.resume_from={run}"]


def corrupt(relative: str, data: bytes):
    def mutate(run, tmp_path):
        (run / relative).write_bytes(data)

    return mutate


def pickled_checkpoint(run, tmp_path):
    (run / "round_0001" / "surrogate.safetensors").write_bytes(pickle.dumps(_Payload(str(tmp_path / SENTINEL))))


def half_shard(run, tmp_path):
    path = run / "data" / "round_0000.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def evaluate_with(edit=None, path=None):
    """Evaluate mode on a copy of the finished run's last checkpoint, edited by `edit`."""

    def setup(tmp_path, ctx):
        run = _copy_run(tmp_path, ctx)
        checkpoint = run / "round_0001" / "surrogate.safetensors"
        if edit:
            edit(checkpoint)
        target = path(run) if path else checkpoint
        return [
            "--config.mode=evaluate",
            "--config.run_name=eval",
            f"--config.reward_model_path={target}",
        ]

    return setup


def rewrite_checkpoint(change_header=None, change_tensors=None):
    def edit(path: Path):
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = json.loads(metadata["surrogate_header"])
        if change_header:
            change_header(header)
        if change_tensors:
            change_tensors(tensors)
        metadata["surrogate_header"] = json.dumps(header)
        save_file(tensors, str(path), metadata=metadata)

    return edit


def _huge_hidden(header):
    header["hyperparameters"]["hidden"] = [2_000_000_000]


def _unknown_hparam(header):
    header["hyperparameters"]["callback"] = "os.system"


def _nan_weight(tensors):
    name = next(k for k in tensors if k.startswith("net.") and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")


def _wrong_shape(tensors):
    name = next(k for k in tensors if k.startswith("net.") and tensors[k].ndim >= 2)
    tensors[name] = torch.zeros(3, 3)


def prompt_file(data: bytes | None, field: str = "train_file"):
    """``prompts.<field>`` set to a file holding `data` (None: a folder)."""

    def setup(tmp_path, ctx):
        path = tmp_path / "prompts.txt"
        path.mkdir() if data is None else path.write_bytes(data)
        return [f"--config.prompts.{field}={path}"]

    return setup


CASES = [
    # -- the command line
    Case("unknown field", ["--config.smc.bogus=1"], text="unknown config field 'smc.bogus'"),
    Case("unknown surrogate kwarg field", ["--config.surrogate.kwargs.newkey=3"], text="surrogate.kwargs.newkey"),
    Case("unknown variant", text="Unknown config variant", setup=lambda t, c: ["--config", "config/UCB_smc.py:nope"]),
    Case("missing config file", text="does not exist", setup=lambda t, c: ["--config", str(t / "Nope.py") + ":x"]),
    Case("int field given a float", ["--config.smc.num_particles=2.5"], text="smc.num_particles"),
    Case("float field given text", ["--config.smc.kl_coeff=abc"], text="smc.kl_coeff"),
    Case("stray argument", ["oops"], text="unexpected arguments"),
    Case("unknown flag", ["--nosuchflag"], text="--nosuchflag"),
    # -- numbers that are not finite or out of range
    Case("kl_coeff nan", ["--config.smc.kl_coeff=nan"], text="smc.kl_coeff"),
    Case("kl_coeff inf", ["--config.smc.kl_coeff=inf"], text="smc.kl_coeff"),
    Case("kl_coeff zero", ["--config.smc.kl_coeff=0.0"], text="smc.kl_coeff"),
    Case("beta nan", ["--config.acquisition.beta=nan"], text="acquisition.beta"),
    Case("beta negative", ["--config.acquisition.beta=-1.0"], text="acquisition.beta"),
    Case("bonus clip zero", ["--config.acquisition.clip=0.0"], text="acquisition.clip"),
    Case("unknown acquisition", ["--config.acquisition.kind=psychic"], text="acquisition.kind"),
    Case(
        "unknown beta schedule",
        ["--config.acquisition.beta_schedule=linear"],
        text="Unknown acquisition.beta_schedule 'linear'; choose one of: constant, gp_ucb.",
    ),
    Case("acquisition the surrogate cannot serve", ["--config.acquisition.kind=max_heads"], text="'heads'"),
    Case("hidden absurd", ["--config.surrogate.kwargs.hidden=(2000000000,)"], text="hidden"),
    Case("tempering_gamma negative", ["--config.smc.tempering_gamma=-1.0"], text="smc.tempering_gamma"),
    Case("tempering_gamma nan", ["--config.smc.tempering_gamma=nan"], text="smc.tempering_gamma"),
    Case("prompts_per_call zero", ["--config.smc.prompts_per_call=0"], text="smc.prompts_per_call"),
    Case("max_chunk_rows negative", ["--config.smc.max_chunk_rows=-1"], text="smc.max_chunk_rows"),
    Case("ess_threshold above 1", ["--config.smc.ess_threshold=1.5"], text="smc.ess_threshold"),
    Case("num_particles zero", ["--config.smc.num_particles=0"], text="smc.num_particles"),
    Case("num_steps zero", ["--config.model.num_steps=0"], text="model.num_steps"),
    Case("num_rounds zero", ["--config.loop.num_rounds=0"], text="loop.num_rounds"),
    Case("images_per_prompt above particles", ["--config.loop.images_per_prompt=3"], text="exceeds smc.num_particles"),
    Case(
        "queries not a multiple",
        ["--config.loop.images_per_prompt=2", "--config.loop.queries_per_round=3"],
        text="multiple of",
    ),
    Case("noise_std nan", ["--config.oracle.noise_std=nan"], text="oracle.noise_std"),
    Case("timeout nan", ["--config.oracle.timeout_s=nan"], text="oracle.timeout_s"),
    Case("timeout zero", ["--config.oracle.timeout_s=0.0"], text="oracle.timeout_s"),
    Case("seed negative", ["--config.seed=-1"], text="seed"),
    Case("device banana", ["--config.device=banana"], text="device"),
    *(
        []
        if torch.cuda.is_available()
        else [Case("device cuda without one", ["--config.device=cuda"], text="no CUDA device")]
    ),
    Case("unknown oracle", ["--config.oracle.kind=telepathy"], text="oracle.kind"),
    Case("unknown guidance", ["--config.smc.guidance=psychic"], text="smc.guidance"),
    Case("method name with a newline", ["--config.method=a\nb"], text="method must be"),
    Case("external oracle without command", ["--config.oracle.command=('',)"], text="oracle.command"),
    Case("unknown surrogate kind", ["--config.surrogate.kind=crystal_ball"], text="surrogate.kind"),
    Case("missing model folder", ["--config.model.path=/nonexistent/model"], text="does not exist"),
    # -- where the run goes
    Case("empty run_name", ["--config.run_name="], text="run_name is empty"),
    Case("run_name escaping output_dir", ["--config.run_name=../x"], text="not a plain name"),
    Case("run_name with a separator", ["--config.run_name=a/b"], text="not a plain name"),
    Case("empty output_dir", ["--config.output_dir="], text="output_dir is empty"),
    Case("output_dir is a file", setup=output_dir_is_file, text="is a file"),
    Case("existing folder, no overwrite", setup=existing_dir(), text="already exists"),
    Case(
        "existing foreign folder, overwrite", setup=existing_dir(extra=["--config.overwrite=True"]), text="no run.json"
    ),
    Case(
        "evaluation folder overwritten by training",
        setup=existing_dir(
            marker={"tool": "das-toolkit", "kind": "online-evaluate"}, extra=["--config.overwrite=True"]
        ),
        text="not a 'online-train' one",
    ),
    Case(
        "overwrite with a late mistake keeps the old run",
        setup=existing_run_overwritten(["--config.smc.tempering_gamma=-1.0"]),
        text="smc.tempering_gamma",
    ),
    Case(
        "overwrite with a missing oracle program keeps the old run",
        setup=existing_run_overwritten(["--config.oracle.command=('no-such-oracle-program-xyz', 'rate.py')"]),
        text="no-such-oracle-program-xyz",
    ),
    Case("output_dir linked into another run", setup=output_dir_linked_into_a_run, text="lies inside the run"),
    Case("output_dir below another run", setup=output_dir_below_a_run, text="lies inside the run"),
    Case("overwrite of a run holding another run", setup=run_with_a_run_inside, text="another run lies inside"),
    # -- resume
    Case("resume a folder with a copied config.json", setup=copied_config_resume, text="no run.json marker"),
    Case("resume from nowhere", setup=lambda t, c: [f"--config.resume_from={t / 'missing'}"], text="Cannot resume"),
    Case("resume from a foreign folder", setup=foreign_resume, text="no run.json marker"),
    Case("resume with another seed", setup=resume_of(extra=["--config.seed=5"]), text="seed"),
    Case("resume with another kl_coeff", setup=resume_of(extra=["--config.smc.kl_coeff=0.5"]), text="smc.kl_coeff"),
    Case(
        "resume with another surrogate",
        setup=resume_of(extra=["--config.surrogate.kind=bootstrap"]),
        method="Bootstrap",
        text="surrogate.kind",
    ),
    Case("resume and overwrite", setup=resume_of(extra=["--config.overwrite=True"]), text="contradict"),
    Case("resume a locked run", setup=locked_resume, text="in use by"),
    Case("resume with a half shard", setup=resume_of(half_shard), text="round_0000.safetensors"),
    Case(
        "resume with corrupt metrics",
        setup=resume_of(corrupt("round_0000/metrics.json", b"{not json")),
        text="metrics.json",
    ),
    Case("resume with a pickle checkpoint", setup=resume_of(pickled_checkpoint), text="pickle"),
    # -- checkpoints handed to evaluate mode
    Case(
        "evaluate without a checkpoint", ["--config.mode=evaluate", "--config.run_name=eval"], text="reward_model_path"
    ),
    Case(
        "evaluate a missing checkpoint",
        setup=evaluate_with(path=lambda run: run / "round_0009"),
        text="No surrogate checkpoint",
    ),
    Case(
        "evaluate a pickle",
        setup=evaluate_with(
            edit=lambda p: p.write_bytes(pickle.dumps(_Payload(str(p.parent.parent.parent.parent / SENTINEL))))
        ),
        text="pickle",
    ),
    Case(
        "checkpoint asking for 2e9 hidden units", setup=evaluate_with(rewrite_checkpoint(_huge_hidden)), text="hidden"
    ),
    Case(
        "checkpoint with an unknown hyperparameter",
        setup=evaluate_with(rewrite_checkpoint(_unknown_hparam)),
        text="callback",
    ),
    Case(
        "checkpoint with a NaN weight",
        setup=evaluate_with(rewrite_checkpoint(change_tensors=_nan_weight)),
        text="non-finite",
    ),
    Case(
        "checkpoint with a wrong shape",
        setup=evaluate_with(rewrite_checkpoint(change_tensors=_wrong_shape)),
        text="shape",
    ),
    # -- too few answers for the surrogate's first fit (issue 23): refused before a query is paid
    Case(
        "initial_queries below the surrogate's minimum",
        ["--config.loop.initial_queries=1"],
        text="loop.initial_queries (1) is below the 2 answers the surrogate.kind 'ucb' needs",
    ),
    # -- prompt files, read and decoded in full at validation (issue 23)
    Case("train prompt file not UTF-8", setup=prompt_file(b"a red square\n\xff\xfe blue\n"), text="not UTF-8 text"),
    Case("train prompt file in UTF-16", setup=prompt_file("a red square\n".encode("utf-16-le")), text="NUL bytes"),
    Case("empty eval prompt file", setup=prompt_file(b"# only a comment\n\n", "eval_file"), text="has no prompts"),
    Case("a folder as train prompt file", setup=prompt_file(None), text="is a folder, not a file"),
    # -- candidate pools and round 0's covering (issue 25)
    Case("pool without an acquisition", ["--config.loop.pool_size=8"], text="loop.pool_size and loop.acquisition"),
    Case("acquisition without a pool", ["--config.loop.acquisition=qucb"], text="loop.pool_size and loop.acquisition"),
    Case(
        "unknown pool acquisition",
        ["--config.loop.pool_size=8", "--config.loop.acquisition=ei"],
        text="Unknown loop.acquisition",
    ),
    Case(
        "pool smaller than the batch",
        ["--config.loop.pool_size=1", "--config.loop.acquisition=qucb"],
        text="at least loop.queries_per_round",
    ),
    Case("negative pool", ["--config.loop.pool_size=-4"], text="loop.pool_size"),
    Case(
        "pretrained share filling the pool",
        ["--config.loop.pool_size=4", "--config.loop.acquisition=qucb", "--config.loop.pool_pretrained=4"],
        text="loop.pool_pretrained (4) must be below loop.pool_size",
    ),
    Case(
        "initial pool without a rule", ["--config.loop.initial_pool_size=8"], text="loop.initial_selection go together"
    ),
    Case(
        "unknown initial selection",
        ["--config.loop.initial_pool_size=8", "--config.loop.initial_selection=grid"],
        text="Unknown loop.initial_selection",
    ),
    Case(
        "initial pool below initial queries",
        ["--config.loop.initial_pool_size=3", "--config.loop.initial_selection=maximin"],
        text="at least loop.initial_queries",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tiny_model, finished_run, tmp_path, capsys):
    run, command = finished_run
    log = Path(command[2])  # every case asks (or would ask) the oracle that made the finished run
    ctx = {"finished": run}
    argv = loop_argv(tiny_model, tmp_path / "runs", command, method=case.method)
    if case.method != "UCB":
        argv = [a for a in argv if "surrogate.kwargs" not in a]
    extra = case.setup(tmp_path, ctx) if case.setup else []
    if extra and extra[0] == "--config":
        argv[1:3] = extra[:2]
        extra = extra[2:]
    before = snapshot(tmp_path)
    asked_before = log.read_text()
    capsys.readouterr()
    try:
        status = main(argv + case.args + extra)
    finally:
        if "lock" in ctx:
            ctx["lock"].release()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == case.status, err
    assert len(lines) == 1, err
    assert case.text in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "a bad input created, changed or deleted files"
    assert log.read_text() == asked_before, "a bad input paid for a query"
    assert not list(tmp_path.rglob(SENTINEL)) and not (REPO / SENTINEL).exists()


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


# -- failures while running: one line, exit 1, nothing paid is lost ---------------------------
def _run(argv, capsys):
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def test_an_oracle_that_always_fails_ends_in_one_line(tiny_model, tmp_path, capsys):
    argv = loop_argv(tiny_model, tmp_path / "runs", ("false",))
    status, lines = _run(argv + ["--config.oracle.max_retries=0"], capsys)
    assert status == 1 and len(lines) == 1 and "the oracle failed on (nearly) every item" in lines[0], lines
    answers = (tmp_path / "runs" / "run" / "round_0000" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 4 and all(json.loads(a)["status"] == "failed" for a in answers)


def test_a_full_disk_ends_in_one_line_naming_the_path(tiny_model, tmp_path, capsys, monkeypatch, logging_oracle):
    import online.storage

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(online.storage, "atomic_write_bytes", full)
    status, lines = _run(loop_argv(tiny_model, tmp_path / "runs", logging_oracle[0]), capsys)
    assert status == 1 and len(lines) == 1, lines
    assert "No space left on device" in lines[0] and "batch.safetensors" in lines[0]


def test_a_non_finite_batch_is_never_queried(tiny_model, tmp_path, capsys, monkeypatch, logging_oracle):
    import online.loop

    real = online.loop._sample_round

    def poisoned(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch["images"][1] = float("nan")
        return batch

    monkeypatch.setattr(online.loop, "_sample_round", poisoned)
    command, log = logging_oracle
    status, lines = _run(loop_argv(tiny_model, tmp_path / "runs", command), capsys)
    assert status == 1 and len(lines) == 1 and "NaN or inf" in lines[0], lines
    assert not log.exists()
    assert not (tmp_path / "runs" / "run" / "round_0000" / "batch.safetensors").exists()


@pytest.mark.parametrize("module", ["online/online_main_smc.py", "-m das"])
def test_help_lists_variants_fields_and_an_example(module):
    import subprocess
    import sys

    command = (
        [sys.executable, *module.split(), "--help"] if module.startswith("-m") else [sys.executable, module, "--help"]
    )
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Example" in done.stdout and "smc.kl_coeff" in done.stdout
    assert ("tiny_jpeg" in done.stdout) if "online" in module else ("aesthetic" in done.stdout)
