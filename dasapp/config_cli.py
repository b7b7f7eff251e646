"""Reads ``--config path.py:variant`` and ``--config.<field>=<value>`` overrides from argv.

Both command-line tools use it, so both answer ``--help`` the same way and turn every
command-line mistake (unknown field, unknown variant, a value of the wrong type, a missing
config file) into one line instead of absl's tracebacks.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-help")


class CommandLineError(Exception):
    """A command line that cannot be parsed; the message is one sentence."""


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv[1:])


def parse_config_argv(
    argv: Sequence[str],
    example: str,
    lock_config: bool = False,
    without_config: Callable[[list[str]], Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Parses `argv` (``argv[0]`` is the program) into a config and its command-line overrides.

    Args:
        argv: the full command line.
        example: a ``--config`` value shown in messages, e.g. ``config/UCB_smc.py:tiny_jpeg``.
        lock_config: whether the config refuses new fields after parsing.
        without_config: for a command line without ``--config``: called with `argv`, it gives
            the ConfigDict the ``--config.<field>`` overrides apply to (or raises
            :class:`CommandLineError`); None: ``--config`` is required.

    Returns:
        The ConfigDict and a flat dict ``{"smc.kl_coeff": 0.1, ...}`` of the fields given on
        the command line.

    A field given more than once takes its last value, tuples included (absl would join the
    tuples of a repeated tuple field into one).

    Raises:
        CommandLineError: for anything that does not parse, with one line naming it.
    """
    from absl import flags
    from ml_collections import config_flags

    _require_variant(argv)
    base = None
    if without_config is not None and flag_value(argv, "config") is None:
        base = without_config(list(argv))
    values = _parse(argv, example, lock_config, base)
    repeated = [name for name in values if isinstance(values[name], flags.MultiFlag) and values[name].present > 1]
    if repeated:  # parse again with only the last occurrence of each repeated tuple field
        values = _parse(_keep_last(argv, set(repeated)), example, lock_config, base)
    config = values.config
    if config is None:
        raise CommandLineError(f"--config is required, e.g. --config {example}.")
    return config, dict(config_flags.get_override_values(values["config"]))


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The last value of ``--name=value`` or ``--name value`` in `argv` (before ``--``); None when absent."""
    found, i = None, 1
    while i < len(argv) and argv[i] != "--":
        parsed = _flag_name(argv[i])
        if parsed is not None and parsed[0] == name:
            if parsed[1]:
                found = argv[i].partition("=")[2]
            elif i + 1 < len(argv):
                found, i = argv[i + 1], i + 1
        i += 1
    return found


def _parse(argv: Sequence[str], example: str, lock_config: bool, base=None):
    """The parsed flags of `argv` (a fresh registry per call: parsing twice in one process works);
    `base`, when given, is the config the overrides apply to (a copy of it) instead of ``--config``'s."""
    import copy

    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()  # a fresh registry per call: parsing twice in one process works
    if base is None:
        config_flags.DEFINE_config_file(
            "config",
            None,
            f"Config file and variant, e.g. {example}.",
            flag_values=values,
            lock_config=lock_config,
            sys_argv=list(argv),
        )
    else:
        config_flags.DEFINE_config_dict(
            "config", copy.deepcopy(base), flag_values=values, lock_config=lock_config, sys_argv=list(argv)
        )
    argv = list(argv)
    try:
        rest = values(argv)
    except flags.UnrecognizedFlagError as error:
        raise CommandLineError(f"{_unrecognized(error)}; see --help.") from None
    except flags.IllegalFlagValueError as error:
        raise CommandLineError(_illegal_value(str(error))) from None
    except (AttributeError, KeyError) as error:
        raise CommandLineError(_unknown_field(str(error), argv)) from None
    except OSError as error:
        raise CommandLineError(_missing_file(str(error), example)) from None
    except (ValueError, TypeError, ImportError) as error:
        raise CommandLineError(_last_line(str(error))) from None
    if len(rest) > 1:
        raise CommandLineError(f"unexpected arguments {rest[1:]}; pass settings as --config.<field>=<value>.")
    config = values.config
    if type(config).__name__ == "_ErrorConfig":  # a config file that failed to load reports on first access
        try:
            config.to_dict()
        except OSError as error:
            raise CommandLineError(_missing_file(str(error), example)) from None
    return values


def _flag_name(arg: str) -> tuple[str, bool] | None:
    """``("config.a.b", has_inline_value)`` for a flag argument such as ``--config.a.b=1``; None for others."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name, sep, _ = arg.lstrip("-").partition("=")
    return name, bool(sep)


def _keep_last(argv: Sequence[str], names: set[str]) -> list[str]:
    """`argv` with all but the last occurrence of each flag in `names` (flags that take a value) left out."""
    spans: dict[str, list[range]] = {}
    i = 1
    while i < len(argv) and argv[i] != "--":
        parsed = _flag_name(argv[i])
        width = 1
        if parsed is not None and parsed[0] in names:
            width = 1 if parsed[1] else 2  # --name value: the value is the next argument
            spans.setdefault(parsed[0], []).append(range(i, i + width))
        i += width
    dropped = {j for found in spans.values() for span in found[:-1] for j in span}
    return [arg for j, arg in enumerate(argv) if j not in dropped]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _unrecognized(error: Exception) -> str:
    text = str(error)
    match = re.search(r"flag '([^']+)'", text)
    return f"unknown command-line flag --{match.group(1)}" if match else _last_line(text)


def _illegal_value(text: str) -> str:
    if "Error whilst parsing config file" in text:
        # get_config raised: its own message (e.g. an unknown variant) is the last line
        line = _last_line(text)
        return line.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception): ", line) else line
    match = re.match(r"flag (--[^=\s]+)=(.*?): (.*)", _last_line(text.splitlines()[0]))
    if match:
        return f"{match.group(1)}={match.group(2)!s} is not a valid value ({match.group(3)})."
    return _last_line(text)


def _unknown_field(text: str, argv: Sequence[str]) -> str:
    """One line for an unknown field (`text` is ml_collections' message, quotes and a suggestion of its own)."""
    found = re.search(r"[A-Za-z_]\w*", text)
    name = found.group(0) if found else text.strip()
    field, flag = name, None
    for arg in argv:
        given = arg.split("=", 1)[0]
        if arg.startswith(("--config.", "-config.")) and re.search(rf"\.{re.escape(name)}(\.|$)", given):
            field, flag = given.split("config.", 1)[1], given
            break
    source = f" (from {flag})" if flag else ""
    close = _close_field(field, argv)
    hint = f"did you mean {close!r}?" if close else "see --help for the fields."
    return f"unknown config field {field!r}{source}; {hint}"


def _load_config_module(path: str) -> ModuleType:
    """The config file at `path`, loaded as a module (as ml_collections loads it)."""
    spec = importlib.util.spec_from_file_location("_config_file", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_variant(argv: Sequence[str]) -> None:
    """Refuses ``--config <file>`` without ``:<variant>`` when the file's ``get_config`` takes a variant.

    Raises:
        CommandLineError: naming the variants (the file's ``VARIANTS`` or ``get_config.variants``).
    """
    value = flag_value(argv, "config")
    if not value or ":" in value or not Path(value).is_file():
        return
    try:
        module = _load_config_module(value)
        takes_variant = bool(inspect.signature(module.get_config).parameters)
    except Exception:  # noqa: BLE001 -- the parse that follows reports a config file that does not load
        return
    if takes_variant:
        variants = getattr(module, "VARIANTS", None) or getattr(module.get_config, "variants", ())
        listed = f", one of: {', '.join(variants)}" if variants else ""
        raise CommandLineError(f"{value} needs a variant: {value}:<variant>{listed}.")


def _field_names(config: Any, prefix: str = "") -> Iterator[str]:
    """Every field of `config` by its dotted name, sections included (``smc``, ``smc.num_particles``, ...)."""
    import ml_collections

    for key, value in config.items():
        yield prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            yield from _field_names(value, f"{prefix}{key}.")


def _close_field(field: str, argv: Sequence[str]) -> str | None:
    """The config's field name closest to `field` (difflib); None when none is close or the config does not load."""
    value = flag_value(argv, "config")
    if not value:
        return None
    path, sep, variant = value.partition(":")
    try:
        config = _load_config_module(path).get_config(*([variant] if sep else []))
        names = list(_field_names(config))
    except Exception:  # noqa: BLE001 -- no suggestion then; the message names the field all the same
        return None
    matches = difflib.get_close_matches(field, names, n=1)
    return matches[0] if matches else None


def _missing_file(text: str, example: str) -> str:
    match = re.search(r"No such file or directory: '([^']+)'", text)
    if match:
        return f"config file {match.group(1)!r} does not exist; give one such as --config {example}."
    return _last_line(text)
