"""A person as the loop's black box: a local rating page (``oracle.kind = "human"``).

When a round needs answers, :class:`HumanOracle` serves a page on ``oracle.host`` (default
``127.0.0.1``) and waits. The page shows the round's pending images with their prompts, a
1–10 rating per image (buttons, or keys ``1``–``9`` and ``0`` for 10; ``s`` skips, which is
recorded as a failed answer), the round and how many are left, and the run's reward curve.
Each rating is handed to the loop the moment it is given, and the loop appends it to the
round's answer journal before the page hears back, so a closed tab, a reload or a killed
process loses nothing: the page (or a resumed run) shows only the images still unrated.
When all are rated the loop goes on by itself.

Safety: every request needs the random token printed on the terminal (403 otherwise); the
server answers four fixed routes and serves images from memory by their index in the
round, so no part of a request is ever used as a path.

Needs the optional extra ``pip install "das-toolkit[human]"`` (starlette and uvicorn).
"""

from __future__ import annotations

from online.human.extra import EXTRA_MODULES, MISSING_EXTRA, human_extra_installed


def __getattr__(name: str):
    if name == "HumanOracle":  # imported on use: the web packages are an optional extra
        from online.human.oracle import HumanOracle

        return HumanOracle
    raise AttributeError(name)


__all__ = ["EXTRA_MODULES", "MISSING_EXTRA", "HumanOracle", "human_extra_installed"]
