"""The human oracle: serves the rating page while a round waits for a person's answers."""

from __future__ import annotations

import io
import ipaddress
import json
import math
import queue
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from online.errors import RunError
from online.human.extra import MISSING_EXTRA, human_extra_installed

SCALE = (1, 10)
SKIPPED = "skipped by the rater"
START_TIMEOUT_S = 20.0


class _Stopped(Exception):
    """:meth:`HumanOracle.stop` was called while the page waited."""


@dataclass
class Ticket:
    """One rating on its way from the page to the journal."""

    index: int
    rating: int | None
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class RatingBoard:
    """The items of the current round still to be rated, shared by the page and the loop.

    The web server's threads :meth:`claim` an item for a rating; the loop's thread takes the
    tickets from :attr:`tickets`, journals each answer and then marks it done, so the page
    hears "saved" only once the answer is on disk.
    """

    scale = SCALE

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, bytes]] = {}  # index -> (prompt, PNG bytes)
        self._claimed: set[int] = set()
        self.tickets: queue.Queue[Ticket] = queue.Queue()
        self.info: dict = {"accepting": False}

    def open(self, items: dict[int, tuple[str, bytes]], info: dict) -> None:
        with self._lock:
            self._pending = dict(items)
            self._claimed = set()
            self.info = {**info, "accepting": True, "session": secrets.token_hex(6)}

    def close(self) -> None:
        """Stops accepting ratings; a rating the loop never took (a stop, an error) is answered
        "not saved" at once, so no request of the page waits for a loop that has gone."""
        with self._lock:
            self._pending, self._claimed = {}, set()
            self.info = {**self.info, "accepting": False}
        while True:
            try:
                ticket = self.tickets.get_nowait()
            except queue.Empty:
                break
            ticket.error = "the loop stopped before saving it"
            ticket.done.set()

    def snapshot(self) -> dict:
        with self._lock:
            items = [{"index": i, "prompt": prompt} for i, (prompt, _) in sorted(self._pending.items())]
            return {**self.info, "left": len(self._pending), "items": items, "scale": list(self.scale)}

    def image(self, index: int) -> bytes | None:
        with self._lock:
            item = self._pending.get(index)
        return None if item is None else item[1]

    def left(self) -> int:
        with self._lock:
            return len(self._pending)

    def claim(self, index: int, rating: int | None) -> Ticket | None:
        """A ticket for rating `index`, or None when it is not pending or already being rated."""
        with self._lock:
            if index not in self._pending or index in self._claimed:
                return None
            self._claimed.add(index)
            ticket = Ticket(index, rating)
        self.tickets.put(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """A ticket that could not be saved: its item may be rated again."""
        with self._lock:
            self._claimed.discard(ticket.index)

    def settle(self, ticket: Ticket) -> None:
        """The ticket's answer is journaled: the item leaves the board."""
        with self._lock:
            self._pending.pop(ticket.index, None)
            self._claimed.discard(ticket.index)
        ticket.done.set()


def answer_row(ticket: Ticket) -> dict:
    """The journal row of a rating (a skip is a failed answer, left out of fitting)."""
    if ticket.rating is None:
        return {"index": ticket.index, "value": None, "status": "failed", "attempts": 1, "error": SKIPPED}
    return {"index": ticket.index, "value": float(ticket.rating), "status": "ok", "attempts": 1, "error": ""}


def png_bytes(image: torch.Tensor) -> bytes:
    """One `(3, H, W)` image in [0, 1] as PNG bytes."""
    from PIL import Image

    from das.images import to_uint8

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port(host: str) -> int:
    """A TCP port that is free on `host` now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_url(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


class HumanOracle:
    """A person rates the images on a local page; answers arrive one by one.

    The loop hands it a round's unanswered items through :meth:`rate_items` (which
    :func:`online.oracles.query_with_retries` calls for oracles that answer item by item);
    it serves the page until every item has a rating or a skip, passing each answer on the
    moment it is given. The server runs only while a round waits; the page keeps polling
    and picks up the next round on the same address.

    Args:
        host: address to listen on; ``127.0.0.1`` (the default) keeps the page on this
            machine, another address serves it on a network on purpose (the token is still
            needed).
        port: TCP port; 0 picks a free one (once, so the address stays the same all run).
        run_dir: the run directory, for the round number and the reward curve (optional).
        num_rounds: the run's number of rounds, shown on the page (optional).
        mode: ``"train"`` (rounds) or ``"evaluate"`` (one evaluation batch).
        announce: where the address is told (default: standard output).
    """

    item_by_item = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        run_dir: str | Path | None = None,
        num_rounds: int | None = None,
        mode: str = "train",
        announce: Callable[[str], None] | None = None,
    ):
        if not human_extra_installed():
            from das.rewards.optional import MissingExtraError

            raise MissingExtraError(MISSING_EXTRA)
        self.host = host
        self.token = secrets.token_urlsafe(24)
        try:
            self.port = int(port) or free_port(host)
        except OSError as error:
            from dasapp.config_checks import ConfigError

            raise ConfigError(
                f"oracle.host {host!r} is not an address of this machine ({error.strerror or error}); use 127.0.0.1 "
                "(the default), 0.0.0.0 (every interface) or the address of one of its network interfaces."
            ) from None
        self.url = page_url(host, self.port, self.token)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.num_rounds = num_rounds
        self.mode = mode
        self.announce = announce or (lambda line: print(line, flush=True))
        self.board = RatingBoard()
        self.serving = threading.Event()  # set while the page accepts ratings (tests wait on it)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ends the wait for ratings from another thread, as Ctrl-C does (answers given so far stay)."""
        self._stop.set()

    # ------------------------------------------------------------------ the Oracle protocol
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Ratings of all `images` `(N, C, H, W)`: `(N,)` float64, NaN for skipped ones."""
        values = torch.full((len(prompts),), math.nan, dtype=torch.float64)

        def keep(answers: list[dict]) -> None:
            for row in answers:
                if row["value"] is not None:
                    values[row["index"]] = row["value"]

        self.rate_items(images, prompts, range(len(prompts)), keep)
        return values

    def rate_items(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        indices: Sequence[int],
        on_answers: Callable[[list[dict]], None],
    ) -> None:
        """Serves the page until every item in `indices` is rated or skipped.

        Each answer (``index``, ``value``, ``status``, ``attempts``, ``error``) is handed to
        `on_answers` on this thread as soon as it is given; the page is told it was saved
        only after `on_answers` returned.
        """
        indices = list(indices)
        if not indices:
            return
        items = {i: (str(prompts[i]), png_bytes(images[i])) for i in indices}
        info = self._round_info(int(images.shape[0]))
        self.board.open(items, info)
        try:
            server, thread = self._start_server()
        except BaseException:
            self.board.close()
            raise
        what = "the evaluation batch" if info["round"] is None else f"round {info['round']}"
        keeps = (
            "Ctrl-C stops" if self.mode == "evaluate" else "each rating is saved as given; Ctrl-C stops, resume later"
        )
        self.announce(f"Rate {len(indices)} image(s) of {what} at {self.url} ({keeps})")
        self.serving.set()
        try:
            self._collect(on_answers)
        except (KeyboardInterrupt, _Stopped):
            if self.mode == "evaluate":
                raise RunError(
                    "Stopped while waiting for ratings of the evaluation batch; run the evaluation again."
                ) from None
            saved = len(indices) - self.board.left()
            raise RunError(
                f"Stopped while waiting for ratings; {saved} rating(s) of {what} were saved: "
                f"resume the run with --config.resume_from={self.run_dir or '<run directory>'} to rate the rest."
            ) from None
        finally:
            self.serving.clear()
            self.board.close()
            server.should_exit = True
            thread.join(timeout=10)

    # ------------------------------------------------------------------ internals
    def _collect(self, on_answers: Callable[[list[dict]], None]) -> None:
        board = self.board
        while board.left():
            if self._stop.is_set():
                self._stop.clear()
                raise _Stopped
            try:
                ticket = board.tickets.get(timeout=0.25)
            except queue.Empty:
                continue
            try:
                on_answers([answer_row(ticket)])
            except BaseException as error:
                ticket.error = f"{type(error).__name__}: {error}"[:200]
                board.release(ticket)
                ticket.done.set()
                raise
            board.settle(ticket)

    def _start_server(self):
        import logging

        import uvicorn

        from online.human.app import build_app

        config = uvicorn.Config(
            build_app(self.board, self.token),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        server = uvicorn.Server(config)
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                server.run()
            except BaseException as error:  # noqa: BLE001 - uvicorn exits with SystemExit when it cannot bind
                failed.append(error)

        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # its bind error is reported below, once
        thread = threading.Thread(target=serve, name="rating-page", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RunError(
                    f"The rating page could not listen on {self.host}:{self.port} (the port may be in use); set "
                    "--config.oracle.port to a free port (0 picks one) or --config.oracle.host to an address of "
                    "this machine, then resume the run."
                )
            time.sleep(0.02)
        if not is_loopback(self.host):
            print(
                f"warning: the rating page is served on {self.host}:{self.port}, reachable from the network; only "
                "the token in its link keeps others out.",
                file=sys.stderr,
                flush=True,
            )
        return server, thread

    def _round_info(self, round_size: int) -> dict:
        """What the page shows besides the images: the round, its size, the reward curve."""
        round_index, curve = None, []
        if self.mode != "evaluate" and self.run_dir is not None:
            from online.run_directory import RunFiles

            files = RunFiles(self.run_dir)
            done = files.complete_rounds()
            # the loop asks about round k only once rounds 0..k-1 are complete
            round_index = done[-1] + 1 if done else 0
            curve = reward_curve(files.metrics_lines_path)
        elif self.mode != "evaluate":
            round_index = 0
        return {"round": round_index, "num_rounds": self.num_rounds, "round_size": round_size, "curve": curve}


def reward_curve(path: Path) -> list[dict]:
    """Per complete round: queries spent and the batch's mean and max reward (``metrics.jsonl``)."""
    curve = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return curve
    for line in lines:
        try:
            row = json.loads(line)
            point = {
                "round": int(row["round"]),
                "queries": int(row["queries_total"]),
                "mean": float(row["true_reward"]["mean"]),
                "max": float(row["true_reward"]["max"]),
            }
        except (ValueError, KeyError, TypeError):
            continue
        if math.isfinite(point["mean"]) and math.isfinite(point["max"]):
            curve.append(point)
    return curve
