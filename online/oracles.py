"""Black-box oracles: images (and prompts) -> rewards, queried with a fault policy.

An oracle is any callable ``(images (N, C, H, W) in [0, 1], prompts) -> (N,)`` tensor; it
may raise, hang, or answer NaN for some items. From the loop's point of view it is never
differentiable. Kinds:

* ``jpeg``, ``colorfulness``, ``aesthetic``: the project's reward functions used as black
  boxes (``das.rewards``);
* ``rare``: the embedded world's rare-colour oracle (``world.oracles``), whose best
  images are ones the pretrained model seldom draws;
* ``multi``: a weighted sum of ``jpeg`` and ``colorfulness`` (embedded world);
* ``human``: a person on a local rating page (:mod:`online.human`, the ``[human]`` extra),
  answering item by item;
* ``external``: a user's command (argv list, run without a shell) for human-in-the-loop or
  lab use. It receives on standard input one line per item, ``<image path>\\t<prompt>``,
  with each image saved as a PNG, and must print one reward per line on standard output
  (``nan`` for an item it cannot score).

:func:`query_with_retries` applies the fault policy: a call that raises, exceeds the
timeout, or answers a value that cannot be learnt from (not finite, or outside the float32
range the surrogate fits in) is retried (only the affected items), then recorded as failed
and left out of fitting. An oracle with ``item_by_item = True`` (the human one) is
instead handed the items and the answer callback itself, and passes each answer on the moment
it is given (no timeout, no retries: a person's skip is a failed answer).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

Oracle = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


class ExternalCommandOracle:
    """Runs a user's command to score images (see the module docstring for the protocol).

    The command runs in a session of its own (its own process group); when it times out, or
    the loop is stopped while it runs (:mod:`dasapp.stopping`), the whole group is killed, so no
    child or grandchild of the command outlives the call.

    Args:
        command: argv list, e.g. ``["python", "rate.py"]``; no shell is involved.
        timeout_s: seconds before the command is killed.
    """

    bounds_own_time = True  # _call_with_timeout runs it on the calling thread with the policy's timeout

    def __init__(self, command: Sequence[str], timeout_s: float = 600.0):
        if not command:
            raise ValueError("The external oracle needs oracle.command, an argv list such as ['python', 'rate.py'].")
        self.command = [str(part) for part in command]
        self.timeout_s = float(timeout_s)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], timeout_s: float | None = None) -> torch.Tensor:
        """Rewards `(N,)` float64 of `images` `(N, C, H, W)`; raises :class:`subprocess.TimeoutExpired`
        after `timeout_s` (default: the constructor's) with the command's process group killed."""
        from das.images import save_png, to_uint8

        with tempfile.TemporaryDirectory(prefix="oracle-") as folder:
            lines = []
            for i, (image, prompt) in enumerate(zip(to_uint8(images), prompts)):
                path = Path(folder) / f"item_{i:05d}.png"
                save_png(image, path)
                lines.append(f"{path}\t{prompt}")
            timeout = self.timeout_s if timeout_s is None else float(timeout_s)
            code, stdout, stderr = run_process_group(self.command, "\n".join(lines) + "\n", timeout)
        if code != 0:
            raise RuntimeError(f"oracle command exited with {code}: {stderr.strip()[-500:]}")
        values = [line.strip() for line in stdout.splitlines() if line.strip()]
        if len(values) != len(lines):
            raise RuntimeError(f"oracle command printed {len(values)} rewards for {len(lines)} images")
        return torch.tensor([float(v) for v in values], dtype=torch.float64)


def run_process_group(command: Sequence[str], stdin_text: str, timeout_s: float) -> tuple[int, str, str]:
    """Runs `command` in a new session with `stdin_text` on its standard input; returns its exit
    status, standard output and standard error.

    If it is still running when this returns by an exception (:class:`subprocess.TimeoutExpired`
    after `timeout_s` seconds, or :class:`dasapp.stopping.Stopped`), its whole process group is
    killed (SIGKILL) and reaped first.
    """
    from dasapp.stopping import deferred

    process = None
    try:
        with deferred():  # a stop never lands between the fork and knowing the child's pid
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        stdout, stderr = process.communicate(stdin_text, timeout=timeout_s)
        return process.returncode, stdout, stderr
    finally:
        if process is not None and process.returncode is None:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILLs the process group of `process` (led by it: ``start_new_session``), then reaps it.

    Only called while `process` is not reaped, so its pid (the group's id) cannot have been reused.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def reward_as_oracle(reward) -> Oracle:
    """A ``das`` reward used as a black box: no gradients, float64 answers on the CPU."""

    def oracle(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return reward(images, list(prompts)).detach().double().cpu()

    return oracle


@dataclass
class QueryPolicy:
    """How the loop treats a misbehaving oracle.

    Attributes:
        max_retries: extra attempts for items whose call raised, timed out or gave a
            non-finite value.
        timeout_s: seconds allowed per call.
        batch_size: items per call (0: all at once); answers become durable per call.
    """

    max_retries: int = 2
    timeout_s: float = 600.0
    batch_size: int = 0


def _call_with_timeout(oracle: Oracle, images: torch.Tensor, prompts: list[str], timeout_s: float) -> torch.Tensor:
    """One call of `oracle`, given `timeout_s` seconds; raises :class:`concurrent.futures.TimeoutError`
    when it takes longer.

    An oracle with ``bounds_own_time = True`` (:class:`ExternalCommandOracle`) runs on this
    thread and ends its own work at the timeout or a stop (its process group killed); any
    other runs on a worker thread that is abandoned at the timeout.
    """
    if getattr(oracle, "bounds_own_time", False) is True:
        try:
            values = oracle(images, prompts, timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            raise concurrent.futures.TimeoutError(f"the oracle took more than {timeout_s:g} s") from None
    else:
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            future = executor.submit(oracle, images, prompts)
            values = future.result(timeout=timeout_s)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.numel() != len(prompts):
        raise RuntimeError(f"oracle returned {values.numel()} values for {len(prompts)} items")
    return values


#: The largest magnitude an answer may have: the surrogate fits in float32, where a larger one is inf.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def answer_problem(value: float) -> str:
    """Why an oracle's `value` cannot be learnt from, or ``""`` when it can.

    A value must be finite and, since the surrogate fits in float32, at most
    :data:`FLOAT32_MAX` in magnitude (every such value casts to a finite float32; a larger one
    such as ``1e308`` would become inf in the fit).
    """
    if not math.isfinite(value):
        return "non-finite value"
    if abs(value) > FLOAT32_MAX:
        return f"value {value:g} outside the float32 range (magnitude at most {FLOAT32_MAX:.4g})"
    return ""


def _refused(row: dict) -> dict:
    """An answer row of an ``item_by_item`` oracle, as a failed one when its value cannot be learnt from."""
    problem = "" if row["status"] != "ok" or row["value"] is None else answer_problem(float(row["value"]))
    return {**row, "value": None, "status": "failed", "error": problem} if problem else row


def query_with_retries(
    oracle: Oracle,
    images: torch.Tensor,
    prompts: Sequence[str],
    indices: Sequence[int],
    policy: QueryPolicy,
    on_answers: Callable[[list[dict]], None],
) -> None:
    """Asks `oracle` about the items `indices` of a batch, under `policy`.

    Each call's answers are handed to `on_answers` (which makes them durable) before the
    next call, one dict per item: ``index``, ``value`` (float or None), ``status``
    (``ok``/``failed``), ``attempts``, ``error``. A value that cannot be learnt from (not
    finite, or outside the float32 range: :func:`answer_problem`) is refused like a failed
    call: retried, then recorded as failed with the reason, never as data. An oracle with
    ``item_by_item = True`` (the human rating page) gets the items and `on_answers` itself and
    passes on each answer as it is given (a refused value is recorded as failed); the policy's
    timeout and retries do not apply to it.
    """
    if getattr(oracle, "item_by_item", False) is True:
        oracle.rate_items(images, prompts, list(indices), lambda rows: on_answers([_refused(r) for r in rows]))
        return
    pending = list(indices)
    step = policy.batch_size or max(len(pending), 1)
    for start in range(0, len(pending), step):
        chunk = pending[start : start + step]
        attempts = {i: 0 for i in chunk}
        errors: dict[int, str] = {}
        todo = list(chunk)
        while todo:
            for i in todo:
                attempts[i] += 1
            bad, answers = _ask_once(oracle, images, prompts, todo, policy, attempts, errors)
            failed = [i for i in bad if attempts[i] > policy.max_retries]
            answers += [
                {"index": i, "value": None, "status": "failed", "attempts": attempts[i], "error": errors[i]}
                for i in failed
            ]
            if answers:
                on_answers(answers)
            todo = [i for i in bad if attempts[i] <= policy.max_retries]


def _ask_once(
    oracle: Oracle,
    images: torch.Tensor,
    prompts: Sequence[str],
    todo: list[int],
    policy: QueryPolicy,
    attempts: dict[int, int],
    errors: dict[int, str],
) -> tuple[list[int], list[dict]]:
    """One call about the items `todo`: the items to retry or fail (their reasons put in
    `errors`) and the answer rows of the others."""
    try:
        values = _call_with_timeout(oracle, images[todo], [prompts[i] for i in todo], policy.timeout_s)
    except concurrent.futures.TimeoutError:
        errors.update({i: f"timed out after {policy.timeout_s:g} s" for i in todo})
        return list(todo), []
    except Exception as error:  # noqa: BLE001 - any oracle failure is retried, then recorded
        errors.update({i: f"{type(error).__name__}: {error}"[:300] for i in todo})
        return list(todo), []
    bad, answers = [], []
    for i, value in zip(todo, values.tolist()):
        problem = answer_problem(value)
        if problem:
            bad.append(i)
            errors[i] = problem
        else:
            answers.append({"index": i, "value": value, "status": "ok", "attempts": attempts[i], "error": ""})
    return bad, answers


class NoisyOracle:
    """An oracle whose answers carry Gaussian label noise, as a rater's or a lab's would.

    The wrapped oracle's value of item ``i`` is kept as ``true_reward``; the answer the loop
    learns from is ``reward = true_reward + noise_std · ε_i`` (None for a failed item), where
    ``ε`` is one float64 standard normal vector over the whole batch drawn from a generator
    seeded with `seed`. Item ``i`` gets the same noise whichever call or attempt answered it,
    so a resumed batch is answered exactly as an uninterrupted one. A noisy answer outside the
    float32 range (:func:`answer_problem`) is recorded as failed, never stored as data.

    Args:
        inner: the black box (any oracle, including an ``item_by_item`` one).
        noise_std: the label noise std (0 for none).
        seed: the seed of this batch's noise (the loop's ``stream_seed(seed, k, "noise")``).
    """

    def __init__(self, inner: Oracle, noise_std: float, seed: int):
        self.inner, self.noise_std, self.seed = inner, noise_std, seed

    def noise(self, count: int) -> torch.Tensor:
        """``ε``, `(count,)` float64, for a batch of `count` items."""
        return torch.randn(count, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)

    def ask(self, images: torch.Tensor, prompts: Sequence[str], indices: Sequence[int], policy, on_answers) -> None:
        """:func:`query_with_retries` on the inner oracle (same arguments), each answer given
        ``true_reward`` and its noisy ``reward`` before it reaches `on_answers`."""
        noise = self.noise(images.shape[0])

        def with_noise(answers: list[dict]) -> None:
            for row in answers:
                value = row["value"]
                row["true_reward"] = value
                row["reward"] = None if value is None else value + self.noise_std * float(noise[row["index"]])
                problem = "" if row["reward"] is None else answer_problem(row["reward"])
                if problem:  # e.g. a huge noise_std: the noisy answer is refused like a bad value
                    row.update(value=None, true_reward=None, reward=None, status="failed", error=f"noisy {problem}")
            on_answers(answers)

        query_with_retries(self.inner, images, prompts, indices, policy, with_noise)
