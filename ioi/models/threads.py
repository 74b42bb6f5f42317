"""Torch on one thread for a stretch of work, the caller's thread count restored after.

Three reasons to want it, one definition: pretraining (a seed gives the same weights on machines
with different core counts), timing one thread (the fine-tuning probe of `ioi.runs.precompute`),
and a short prompt on a shared CPU (the dashboard's Playground: a second thread waits for a core
another process holds and costs more than it gives; BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside; the caller's thread count is restored after (also on error)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
