"""A cap on torch's intra-op CPU threads for one block.

Pure tool: imports only ``torch`` and the standard library (so ``cka`` and ``crosscoder_train`` can share it).
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def num_threads(n: int = 1):
    """Run the block with at most ``n`` torch intra-op threads and restore the previous count after.

    Meant for many small ops (the sparse part of a crosscoder step, CKA's O(d^2) finalisation): on a CPU shared
    with other processes each parallel region waits for a descheduled thread, measured 4-15x slower with 2
    threads than with 1. Where the count is already ``n`` or fewer nothing is changed (a cap never raises it)."""
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
