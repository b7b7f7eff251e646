"""The seeds of the online tools' random streams, and the record a round keeps of them.

Every random stream is seeded from ``(seed, round, stream, rank)`` by :func:`stream_seed`,
so a resumed run draws exactly what an uninterrupted one would have, and an evaluation
draws the same images whatever ran before it.
"""

from __future__ import annotations

import torch

# The streams of a training round (recorded in its ``rng.json``).
STREAMS = {"prompts": 1, "sample": 2, "noise": 3, "fit": 4, "thompson": 5}
# Evaluation samples once, as "round 0" of its own stream (77 · 101 = 7777, its offset from the start).
EVALUATION_STREAMS = {"evaluate": 77}
_STREAM_IDS = {**STREAMS, **EVALUATION_STREAMS}


def stream_seed(seed: int, round_index: int, stream: str, rank: int = 0) -> int:
    """The seed of one random stream of one round on one process."""
    return (seed * 1_000_003 + round_index * 10_007 + _STREAM_IDS[stream] * 101 + rank) % (2**62)


def call_seed(stream: int, call: int) -> int:
    """The seed of sampler call `call` within a stream seeded `stream` (a Thompson draw per call)."""
    return (stream * 1_009 + call) % 2**62


def round_prompts(prompts: list[str], count: int, seed: int, round_index: int) -> list[str]:
    """`count` prompts drawn uniformly with replacement for a round."""
    generator = torch.Generator().manual_seed(stream_seed(seed, round_index, "prompts"))
    picks = torch.randint(len(prompts), (count,), generator=generator)
    return [prompts[i] for i in picks.tolist()]


def rng_record(seed: int, round_index: int, num_processes: int) -> dict:
    """What a round's ``rng.json`` holds: the run seed and every stream seed of the round."""
    return {
        "seed": seed,
        "round": round_index,
        "streams": {s: stream_seed(seed, round_index, s) for s in STREAMS},
        "sample_per_rank": [stream_seed(seed, round_index, "sample", r) for r in range(num_processes)],
    }
