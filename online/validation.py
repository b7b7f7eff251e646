"""Checks a loop config before anything is created, built or paid for: one line per mistake.

Also decides what a resumed run uses: the run's own ``config.json``, with only the fields in
:data:`SAFE_TO_CHANGE_ON_RESUME` taken from the command line, and only when they were given
there explicitly. Any other field given there with a different value is refused with a line
naming it, so a resume never silently changes the method, the seed, or the number of paid
rounds; fields a config file supplies but the command line does not are the stored ones.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
from pathlib import Path

from dasapp.config_checks import ConfigError, check_choice, check_flag, check_number, check_shared_sections
from dasapp.factory import check_prompt_source, resolve_path
from dasapp.run_dirs import RunDirError, read_marker
from dasapp.weights import check_weights
from online.builders import BETA_SCHEDULES, FEATURIZERS, ORACLES, SURROGATES, featurizer_dim
from online.guidance import GUIDANCE_MODES, SURROGATE_GUIDANCE, guidance_acquisition
from online.run_directory import EVALUATE_KIND, TRAIN_KIND, RunDirectory

MODES = ("train", "evaluate")
TRACKERS = ("", "tensorboard", "wandb")
MAX_QUERIES = 10_000_000

# Fields a resume may change, when given on the command line: how many rounds to run in
# all (to extend a finished run on purpose), and how to show progress and treat a slow or
# failing oracle. Everything else of a resumed run comes from its config.json.
SAFE_TO_CHANGE_ON_RESUME = (
    "loop.num_rounds",
    "method",
    "progress",
    "report",
    "tracker",
    "oracle.timeout_s",
    "oracle.max_retries",
    "oracle.batch_size",
    "oracle.host",  # where the human rating page listens: how answers are asked for, not what they are
    "oracle.port",
)
# Where the run lives: given by resume_from on a resume, not compared.
LOCATION_FIELDS = ("resume_from", "run_name", "output_dir", "overwrite")
# Fields added to the configs after runs were made, with the value that reproduces what the
# tool did before they existed. A run whose config.json lacks one resumes when the field has
# that value now (and keeps it); any other value is a different setting.
ADDED_FIELDS = {
    "smc.gradient": "auto",
    "smc.gradient_every": 1,
    "smc.gradient_after": 0.0,
    "smc.gradient_reuse": False,
    "smc.autocast": "",
    "model.channels_last": False,
    "model.compile_unet": False,
    "loop.pool_size": 0,
    "loop.acquisition": "",
    "loop.pool_pretrained": 0,
    "loop.initial_pool_size": 0,
    "loop.initial_selection": "first",
    "acquisition.beta_schedule": "constant",
    "acquisition.exploit_last_round": False,
}


def validate(config) -> None:
    """Raises :class:`ConfigError` for anything that would fail later; loads no model, writes nothing."""
    check_choice(config.mode, MODES, "mode")
    _validate_choices(config)
    check_shared_sections(config)
    _validate_run_settings(config)
    _validate_loop(config.loop, config.smc, config.surrogate.kind)
    _validate_evaluate_section(config.evaluate, config.smc)
    _validate_surrogate(config.surrogate)
    _validate_oracle(config.oracle)
    check_weights(config)  # every model and weight file on this machine, or one message listing the missing
    _validate_files(config)
    if config.mode == "evaluate":
        _validate_evaluate(config)
    if config.resume_from and config.overwrite:
        raise ConfigError("resume_from and overwrite=True contradict each other; a resume never deletes anything.")
    try:
        RunDirectory.for_config(config).check(config.overwrite)
    except RunDirError as error:
        raise ConfigError(str(error)) from None


def _validate_choices(config) -> None:
    """The named parts (featurizer, oracle, surrogate, guidance) and whether they fit together."""
    FEATURIZERS.check(config.featurizer.kind)
    ORACLES.check(config.oracle.kind)
    SURROGATES.check(config.surrogate.kind)
    check_choice(config.smc.guidance, GUIDANCE_MODES, "smc.guidance")
    _validate_acquisition(config)
    if config.smc.guidance == "oracle" and config.oracle.kind in ("external", "human"):
        what = "an external command" if config.oracle.kind == "external" else "a person"
        raise ConfigError(
            f"smc.guidance='oracle' (the ceiling) guides the sampler by the oracle itself, which {what} "
            "cannot do (it would be queried at every sampler step); use a built-in oracle kind, or another guidance."
        )


def _validate_acquisition(config) -> None:
    """The acquisition section, and whether the surrogate kind offers what the guidance's acquisition
    needs (its class's capabilities: no kind lists here)."""
    from surrogate import ACQUISITIONS, check_acquisition

    acquisition = config.acquisition
    check_choice(acquisition.kind, tuple(sorted(ACQUISITIONS)), "acquisition.kind")
    check_number(acquisition.beta, "acquisition.beta", minimum=0)
    check_choice(acquisition.beta_schedule, BETA_SCHEDULES, "acquisition.beta_schedule")
    check_flag(acquisition.exploit_last_round, "acquisition.exploit_last_round")
    if acquisition.clip is not None:
        check_number(acquisition.clip, "acquisition.clip (None: no clip)", above=0)
    if config.smc.guidance not in SURROGATE_GUIDANCE:
        return
    name = guidance_acquisition(config.smc.guidance, acquisition.kind)
    try:
        check_acquisition(name, SURROGATES.get(config.surrogate.kind))
    except ValueError as error:
        field = "acquisition.kind" if config.smc.guidance == "optimistic" else "smc.guidance"
        raise ConfigError(
            f"{field}={name!r}: {str(error).rstrip('.')}; choose another acquisition or surrogate.kind."
        ) from None


def _validate_run_settings(config) -> None:
    """The run's tracker, name in comparisons and flags."""
    check_choice(config.tracker, TRACKERS, "tracker")
    if config.tracker and importlib.util.find_spec(config.tracker) is None:
        raise ConfigError(
            f"tracker {config.tracker!r} is not installed; pip install {config.tracker} or set --config.tracker=''."
        )
    if not isinstance(config.method, str) or len(config.method) > 80 or not config.method.isprintable():
        raise ConfigError(f"method must be a short printable name (at most 80 characters), got {config.method!r}.")
    for field in ("overwrite", "progress", "report"):
        check_flag(config[field], field)
    check_flag(config.surrogate.warm_start, "surrogate.warm_start")


def _validate_loop(loop, smc, surrogate_kind: str) -> None:
    """``config.loop`` and the loop's own ``smc`` fields: rounds, query counts and how they divide,
    and enough initial queries for the surrogate kind's first fit (its ``min_fit_rows``)."""
    check_number(smc.prompts_per_call, "smc.prompts_per_call", integer=True, minimum=1, maximum=100_000)
    check_number(loop.num_rounds, "loop.num_rounds", integer=True, minimum=1, maximum=1_000_000)
    check_number(loop.initial_queries, "loop.initial_queries", integer=True, minimum=1, maximum=MAX_QUERIES)
    needed = SURROGATES.get(surrogate_kind).min_fit_rows
    if loop.initial_queries < needed:
        raise ConfigError(
            f"loop.initial_queries ({loop.initial_queries}) is below the {needed} answers the surrogate.kind "
            f"{surrogate_kind!r} needs for its first fit; set loop.initial_queries to at least {needed}."
        )
    check_number(loop.queries_per_round, "loop.queries_per_round", integer=True, minimum=1, maximum=MAX_QUERIES)
    check_number(loop.images_per_prompt, "loop.images_per_prompt", integer=True, minimum=1)
    if loop.images_per_prompt > smc.num_particles:
        raise ConfigError(
            f"loop.images_per_prompt ({loop.images_per_prompt}) exceeds smc.num_particles ({smc.num_particles}): "
            f"a prompt's particles allow at most {smc.num_particles} queries; lower it or raise num_particles."
        )
    if not loop.pool_size and loop.queries_per_round % loop.images_per_prompt:  # a pool's batch is any size
        raise ConfigError(
            f"loop.queries_per_round ({loop.queries_per_round}) must be a multiple of "
            f"loop.images_per_prompt ({loop.images_per_prompt}) without a pool (loop.pool_size=0)."
        )
    _validate_pools(loop)


def _validate_pools(loop) -> None:
    """``loop.pool_size`` with ``loop.acquisition`` and ``loop.initial_pool_size`` with ``loop.initial_selection``:
    both off (0 and the old behaviour's name) or both on, with a pool no smaller than the batch it serves;
    ``loop.pool_pretrained`` leaves DAS part of the pool."""
    from surrogate.batch_selection import BATCH_RULES, COVER_RULES

    check_number(loop.pool_size, "loop.pool_size (0: no pool)", integer=True, minimum=0, maximum=MAX_QUERIES)
    check_choice(loop.acquisition, ("",) + BATCH_RULES, "loop.acquisition")
    if (loop.pool_size > 0) != (loop.acquisition != ""):
        raise ConfigError(
            "loop.pool_size and loop.acquisition go together: set both (e.g. loop.pool_size=64 and "
            f"loop.acquisition='qucb') or neither; got {loop.pool_size} and {loop.acquisition!r}."
        )
    if loop.pool_size and (loop.pool_size < loop.queries_per_round or loop.pool_size % loop.images_per_prompt):
        raise ConfigError(
            f"loop.pool_size ({loop.pool_size}) must be at least loop.queries_per_round ({loop.queries_per_round}) "
            f"and a multiple of loop.images_per_prompt ({loop.images_per_prompt})."
        )
    check_number(loop.pool_pretrained, "loop.pool_pretrained", integer=True, minimum=0, maximum=MAX_QUERIES)
    if loop.pool_pretrained and (
        loop.pool_pretrained >= loop.pool_size or (loop.pool_size - loop.pool_pretrained) % loop.images_per_prompt
    ):
        raise ConfigError(
            f"loop.pool_pretrained ({loop.pool_pretrained}) must be below loop.pool_size ({loop.pool_size}), leaving "
            f"a multiple of loop.images_per_prompt ({loop.images_per_prompt}) for DAS; lower it or raise the pool."
        )
    check_number(
        loop.initial_pool_size, "loop.initial_pool_size (0: no pool)", integer=True, minimum=0, maximum=MAX_QUERIES
    )
    check_choice(loop.initial_selection, ("first",) + COVER_RULES, "loop.initial_selection")
    if (loop.initial_pool_size > 0) != (loop.initial_selection != "first"):
        raise ConfigError(
            "loop.initial_pool_size and loop.initial_selection go together: set both (e.g. "
            "loop.initial_pool_size=256 and loop.initial_selection='maximin') or neither; got "
            f"{loop.initial_pool_size} and {loop.initial_selection!r}."
        )
    if 0 < loop.initial_pool_size < loop.initial_queries:
        raise ConfigError(
            f"loop.initial_pool_size ({loop.initial_pool_size}) must be at least loop.initial_queries "
            f"({loop.initial_queries}); raise it or set it to 0."
        )


def _validate_evaluate_section(evaluate, smc) -> None:
    check_number(evaluate.num_prompts, "evaluate.num_prompts (0: all)", integer=True, minimum=0)
    check_number(
        evaluate.images_per_prompt, "evaluate.images_per_prompt", integer=True, minimum=1, maximum=smc.num_particles
    )


def _validate_surrogate(surrogate) -> None:
    from surrogate import HyperparameterError, check_hyperparameters

    try:
        check_hyperparameters(surrogate.kind, dict(surrogate.kwargs), where="surrogate.kwargs")
    except HyperparameterError as error:
        raise ConfigError(str(error)) from None


def _validate_oracle(oracle) -> None:
    check_number(oracle.noise_std, "oracle.noise_std", minimum=0)
    check_number(oracle.max_retries, "oracle.max_retries", integer=True, minimum=0, maximum=1000)
    check_number(oracle.timeout_s, "oracle.timeout_s", above=0, maximum=7 * 24 * 3600)
    check_number(oracle.batch_size, "oracle.batch_size (0: whole batch)", integer=True, minimum=0)
    if oracle.kind == "multi":
        for name, weight in dict(oracle.weights).items():
            check_number(weight, f"oracle.weights.{name}")
    if oracle.kind == "external":
        command = oracle.command
        if (
            isinstance(command, str)
            or not list(command)
            or not all(isinstance(part, str) and part for part in command)
        ):
            raise ConfigError(
                "oracle.kind='external' needs oracle.command, an argv list such as ('python', 'rate.py')."
            )
        _check_program(command[0])
    if oracle.kind == "human":
        _validate_human_oracle(oracle)


def _check_program(program: str) -> None:
    """The external oracle's program exists and can be run (a typo must not cost an overwritten run)."""
    if os.sep in program:
        found = Path(program).is_file() and os.access(program, os.X_OK)
    else:
        found = shutil.which(program) is not None
    if not found:
        raise ConfigError(
            f"oracle.command's program {program!r} was not found or is not executable; fix the first element of "
            "oracle.command (a program on PATH or a path to an executable file)."
        )


HOST_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def _validate_human_oracle(oracle) -> None:
    """Where the rating page listens, and whether its web packages are installed."""
    from online.human import MISSING_EXTRA, human_extra_installed

    host, port = oracle.get("host", "127.0.0.1"), oracle.get("port", 0)
    if not isinstance(host, str) or not (_is_ip_address(host) or HOST_PATTERN.fullmatch(host)):
        raise ConfigError(
            f"oracle.host must be an address or host name of this machine such as 127.0.0.1 (the default) or "
            f"0.0.0.0 (every network interface, on purpose), got {host!r}."
        )
    check_number(port, "oracle.port (0: a free port)", integer=True, minimum=0, maximum=65535)
    if not human_extra_installed():
        raise ConfigError(MISSING_EXTRA)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validate_files(config) -> None:
    if config.oracle.kind == "aesthetic" and not resolve_path(config.oracle.mlp_path).is_file():
        raise ConfigError(
            f"The aesthetic predictor weights {config.oracle.mlp_path!r} do not exist; download "
            "sac+logos+ava1-l14-linearMSE.pth (LAION improved-aesthetic-predictor) and set "
            "--config.oracle.mlp_path to it."
        )
    if config.model.family == "pixel" and not resolve_path(config.model.path).is_dir():
        raise ConfigError(
            f"The model folder {config.model.path!r} does not exist; set --config.model.path to a saved "
            "pixel-space model."
        )
    for field in ("train_file", "eval_file"):  # read and decoded in full: an empty or non-UTF-8 file stops here
        check_prompt_source(
            config.prompts[field],
            f"(prompts.{field}) does not exist; give a text file with one prompt per line.",
            field=f"prompts.{field}",
        )


def _validate_evaluate(config) -> None:
    from surrogate import (
        HyperparameterError,
        SurrogateCheckpointError,
        check_header,
        check_hyperparameters,
        read_header,
    )

    if not config.reward_model_path:
        raise ConfigError(
            "Evaluate mode needs --config.reward_model_path=<run_dir>/round_<k> (or its surrogate.safetensors)."
        )
    path = surrogate_path(Path(config.reward_model_path))
    if not path.is_file():
        raise ConfigError(
            f"No surrogate checkpoint at {str(path)!r}; point --config.reward_model_path at a complete "
            "round directory."
        )
    try:
        header = read_header(path)
        check_header(header, path, config.surrogate.kind, featurizer_dim(config))
        check_hyperparameters(
            header["kind"], header["hyperparameters"], where=f"Surrogate checkpoint {str(path)!r} hyperparameters"
        )
    except (SurrogateCheckpointError, HyperparameterError) as error:
        raise ConfigError(str(error)) from None


def surrogate_path(path: Path) -> Path:
    """A round directory or a surrogate file -> the surrogate file."""
    return path / "surrogate.safetensors" if path.is_dir() else path


# ---------------------------------------------------------------------------- resume
def prepared_config(config, overrides: dict | None = None):
    """The config a run or evaluation uses: with ``resume_from``, the stored one (:func:`resume_config`,
    `overrides` the fields typed on the command line), then :func:`validate`; pure, creates nothing.

    Raises:
        ConfigError: anything :func:`resume_config` or :func:`validate` refuses.
    """
    if config.resume_from:  # a training run, or (mode=evaluate) an evaluation
        config = resume_config(config, overrides)
    validate(config)
    return config


def resume_config(config, overrides: dict | None = None):
    """The config a resumed run (or, with ``mode="evaluate"``, a resumed evaluation) uses: its
    stored ``config.json`` (:func:`stored_run_config`) plus the allowed changes.

    Only the fields given on the command line are compared with the stored ones: a field of
    :data:`SAFE_TO_CHANGE_ON_RESUME` given there is taken, a location field
    (:data:`LOCATION_FIELDS`) is ignored, and any other given field must equal its stored
    value. Fields `config` got from a config file but not from the command line are the
    stored ones.

    Args:
        config: the config built from the command line (a config file and its overrides,
            or the run's own config and its overrides).
        overrides: the fields given explicitly on the command line (``{"loop.num_rounds":
            9}``); None means every field of `config` is what the caller wants: all are
            compared, and the safe ones taken. Without ``mode`` among them, the run's
            marker says whether `config.resume_from` is a run or an evaluation.

    Raises:
        ConfigError: when a given field differs from the stored one and a resume may not
            change it (one line names each such field, stored and given), or the stored
            config is unreadable or not in a directory this tool made.
    """
    import ml_collections

    mode = config.mode if overrides is None or "mode" in overrides else None
    stored = stored_run_config(config.resume_from, mode)
    if config.overwrite:
        raise ConfigError("resume_from and overwrite=True contradict each other; a resume never deletes anything.")
    wanted, kept = _flatten(config.to_dict()), _flatten(stored)
    given = _given_fields(wanted, overrides)
    differ = [
        field
        for field in sorted(given)
        if field not in SAFE_TO_CHANGE_ON_RESUME
        and field not in LOCATION_FIELDS
        and _canonical(wanted.get(field, "<absent>")) != _canonical(kept.get(field, "<absent>"))
    ]
    if differ:
        raise ConfigError(_refusal(config.resume_from, kept.get("mode", config.mode), differ, kept, wanted))
    resumed = ml_collections.ConfigDict(stored)
    # a safe field is taken from the command line when given there, or when the run (from an
    # older version of the tool) has no value for it
    taken = [f for f in SAFE_TO_CHANGE_ON_RESUME if (f in given or f not in kept) and f in wanted]
    for field in taken:
        _set(resumed, field, _get(config, field))
    resumed.resume_from = config.resume_from
    resumed.overwrite = False
    return resumed


def stored_run_config(resume_from: str, mode: str | None = None) -> dict:
    """The ``config.json`` of the run (``mode="train"``) or evaluation (``"evaluate"``) at
    `resume_from`, in today's format: a pre-0.2 config upgraded, and the fields added since
    (:data:`ADDED_FIELDS`) set to the value that reproduces what the run did.

    Args:
        resume_from: the directory; it is read only when it carries this tool's marker.
        mode: None: the kind the directory's marker names.

    Raises:
        ConfigError: not a directory this tool made as that kind, or an unreadable config.
    """
    if mode is None:
        marker = read_marker(Path(resume_from)) or {}
        mode = "evaluate" if marker.get("kind") == EVALUATE_KIND else "train"
    run = RunDirectory(Path(resume_from), None, EVALUATE_KIND if mode == "evaluate" else TRAIN_KIND)
    try:
        stored = run.stored_config()
    except RunDirError as error:
        raise ConfigError(str(error)) from None
    stored = upgrade_pre_acquisition_config(stored, run.config_path)
    kept = _flatten(stored)
    for field, value in ADDED_FIELDS.items():  # a run older than the field ran with its old behaviour
        if field not in kept:
            stored = _with_field(stored, field, value)
    return stored


def config_of_run(resume_from: str, mode: str | None = None):
    """The ConfigDict a resume without a config file starts from (the command line's
    overrides apply to it): :func:`stored_run_config` with tuples for lists, plus today's
    default for each field of :data:`SAFE_TO_CHANGE_ON_RESUME` an older version did not store.

    Raises:
        ConfigError: as :func:`stored_run_config`.
    """
    import ml_collections

    from config.online_base import online_config

    stored = stored_run_config(resume_from, mode)
    kept, defaults = _flatten(stored), _flatten(online_config("ucb", "tiny_jpeg", method="").to_dict())
    for field in SAFE_TO_CHANGE_ON_RESUME:
        if field not in kept:
            stored = _with_field(stored, field, defaults[field])
    return ml_collections.ConfigDict(_tuples(stored))  # JSON's lists: the config files' tuples, as flags parse them


def _tuples(tree):
    """`tree` (parsed JSON) with every list a tuple."""
    if isinstance(tree, dict):
        return {key: _tuples(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(value) for value in tree)
    return tree


def _given_fields(wanted: dict, overrides: dict | None) -> set[str]:
    """The flat fields of `wanted` given on the command line (all of them when `overrides` is None)."""
    if overrides is None:
        return set(wanted)
    return set(overrides) | {f for f in wanted if any(f.startswith(f"{name}.") for name in overrides)}


def _refusal(resume_from: str, mode: str, differ: list[str], kept: dict, wanted: dict) -> str:
    """The one line refusing a resume whose command line changes the fields `differ`."""
    what = "evaluation" if mode == "evaluate" else "run"
    changes = "; ".join(
        f"{field} is {kept.get(field, '<absent>')!r} in its config.json but {wanted.get(field, '<absent>')!r} here"
        for field in differ
    )
    return (
        f"Cannot resume {resume_from!r} with different settings: {changes}; leave those fields off the command "
        f"line (a resume uses the {what}'s own config.json, and only {', '.join(SAFE_TO_CHANGE_ON_RESUME)} may "
        f"change), or start a new {what}."
    )


def upgrade_pre_acquisition_config(stored: dict, path: Path | str = "config.json") -> dict:
    """A stored run config from before 0.2 in the current format (deprecated; removed in 0.4.0).

    Before 0.2 the acquisition lived in the surrogate: ``surrogate.kwargs.beta`` (and ``clip``,
    ``optimism``) and the kind ``"greedy"``. Such a config (one without an ``acquisition``
    section) gets the ``acquisition`` section those meant (``kind``, ``beta``, ``clip``, from the
    surrogate class's own ``legacy_acquisition`` / ``deprecated_kinds``), the surrogate kind it
    loads as, and its kwargs without those fields, with a ``FutureWarning``; any other config
    (or one whose surrogate kind is unknown: validation names it) is returned as it is.

    Args:
        stored: The run's ``config.json``.
        path: Its file, for the warning.
    """
    from surrogate import SURROGATES as CLASSES
    from surrogate.deprecation import deprecate

    surrogate = stored.get("surrogate")
    if "acquisition" in stored or not isinstance(surrogate, dict) or not isinstance(surrogate.get("kwargs"), dict):
        return stored
    kind, kwargs = surrogate.get("kind"), surrogate["kwargs"]
    aliases = {alias: cls for cls in CLASSES.values() for alias in cls.deprecated_kinds}
    cls = CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None and kind in aliases:
        cls, settings = aliases[kind], dict(aliases[kind].deprecated_kinds[kind])
    elif cls is not None:
        settings = cls.legacy_acquisition(kwargs)
    else:
        return stored
    deprecate(
        f"The pre-0.2 run config {str(path)!r} (the acquisition in surrogate.kind/surrogate.kwargs)",
        "it resumes with the acquisition section those meant, and the resumed run records it",
    )
    kept = {name: value for name, value in kwargs.items() if name not in cls.legacy_hyperparameters}
    acquisition = {"kind": settings["kind"], "beta": settings["beta"], "clip": settings["clip"]}
    return {**stored, "surrogate": {**surrogate, "kind": cls.kind, "kwargs": kept}, "acquisition": acquisition}


def _with_field(tree: dict, field: str, value) -> dict:
    """A copy of the nested dict `tree` with the dotted `field` set to `value`."""
    head, _, rest = field.partition(".")
    if not rest:
        return {**tree, head: value}
    return {**tree, head: _with_field(tree.get(head, {}), rest, value)}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)  # tuples and lists compare equal


def _get(config, field: str):
    for part in field.split("."):
        config = config[part]
    return config


def _set(config, field: str, value) -> None:
    *parents, last = field.split(".")
    for part in parents:
        config = config[part]
    config[last] = value
