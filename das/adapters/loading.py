"""Loading pretrained weights with one clear error when they are not available.

Every ``from_pretrained`` helper of the adapters and rewards goes through
:func:`load_pretrained`, so a missing model (not in the local cache, hub unreachable or
offline, misspelled id, wrong local folder) always ends in a :class:`WeightsNotAvailableError`
that names the model and how to point the configuration at a local copy, instead of a
traceback from the hub client.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class WeightsNotAvailableError(OSError):
    """Pretrained weights could not be found locally or fetched from the hub."""


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EnvironmentError, FileNotFoundError]
    try:  # huggingface_hub's own hierarchy is not always rooted at OSError
        from huggingface_hub import errors as hub_errors

        for name in (
            "HfHubHTTPError",
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "EntryNotFoundError",
            "RepositoryNotFoundError",
            "RevisionNotFoundError",
            "GatedRepoError",
        ):
            cls = getattr(hub_errors, name, None)
            if isinstance(cls, type):
                errors.append(cls)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def fetch_command(repo_id: str, local_dir: str) -> str:
    """A shell command that downloads hub model `repo_id` into `local_dir` with the installed tools.

    The ``hf`` command of huggingface_hub 1.x and later when it is installed (on ``PATH`` or beside
    this Python), else huggingface_hub's ``snapshot_download`` through this Python.
    """
    beside = Path(sys.executable).with_name("hf")
    if shutil.which("hf") or beside.is_file():
        program = "hf" if shutil.which("hf") else str(beside)
        return f"{program} download {repo_id} --local-dir {local_dir}"
    code = f"from huggingface_hub import snapshot_download; snapshot_download({repo_id!r}, local_dir={local_dir!r})"
    return f'{sys.executable} -c "{code}"'


def missing_weights_message(what: str, model_id: str | os.PathLike, config_hint: str = "the model path") -> str:
    """The one-sentence explanation for weights that cannot be loaded."""
    model_id = str(model_id)
    if os.path.isdir(model_id):
        return (
            f"Could not load the {what} from the local folder {model_id!r} (files missing or not in the expected "
            f"layout); point {config_hint} at a folder saved with save_pretrained."
        )
    return (
        f"The {what} {model_id!r} is not in the local Hugging Face cache and the hub cannot be reached; download it "
        f"where there is network ({fetch_command(model_id, 'weights/' + model_id)}) and set {config_hint} to that "
        "local folder."
    )


def load_pretrained(
    loader: Callable[..., T],
    model_id: str | os.PathLike,
    what: str,
    config_hint: str = "the model path",
    **kwargs: Any,
) -> T:
    """Calls ``loader(model_id, **kwargs)``, turning hub/file errors into :class:`WeightsNotAvailableError`.

    Args:
        loader: e.g. ``UNet2DModel.from_pretrained`` or ``CLIPModel.from_pretrained``.
        model_id: a hub id or a local folder.
        what: a human name for the component (``"Stable Diffusion pipeline"``).
        config_hint: the configuration field to mention in the error.
        **kwargs: passed to `loader`.
    """
    try:
        return loader(str(model_id), **kwargs)
    except WeightsNotAvailableError:
        raise
    except _hub_errors() as error:
        raise WeightsNotAvailableError(missing_weights_message(what, model_id, config_hint)) from error
