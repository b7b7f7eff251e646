"""The few collective operations the loop needs, on top of ``accelerate``.

With one process every function is the identity, so the loop reads the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def shard(items: Sequence[Any], accelerator) -> list[Any]:
    """This process's contiguous share of `items` (the first ranks take one more if uneven)."""
    n, world, rank = len(items), accelerator.num_processes, accelerator.process_index
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (1 if rank < extra else 0)])


def gather_to_main(part: Any, accelerator) -> list[Any] | None:
    """Every process's `part`, in rank order, on the main process (None elsewhere)."""
    if accelerator.num_processes == 1:
        return [part]
    from accelerate.utils import gather_object

    parts = gather_object([part])
    return parts if accelerator.is_main_process else None


def broadcast_from_main(value: Any, accelerator) -> Any:
    """The main process's `value` on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value if accelerator.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]
