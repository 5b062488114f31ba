"""Running a batch's independent sequences on every core, the same way in every engine.

The engines' kernels (numpy's products and loops, the numba kernels) release the GIL, so parts of the
batch run on threads; BLAS is held to one thread meanwhile, since the parts already use every core.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Callable, TypeVar

import threadpoolctl

from ssmc.ir.fixed_point import SAT_QUANTITIES

THREAD_SEQUENCES = 16  # sequences a thread runs at least: fewer do not pay for its start

Result = TypeVar("Result")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def batch_parts(batch: int) -> list[slice]:
    """The batch's rows in one contiguous part per thread: at most one part per core, each of at least
    THREAD_SEQUENCES sequences (a single part for a small batch)."""
    threads = max(1, min(cores(), batch // THREAD_SEQUENCES))
    return [slice(i * batch // threads, (i + 1) * batch // threads) for i in range(threads)]


def run_parts(run_part: Callable[[slice], Result], parts: list[slice]) -> list[Result]:
    """run_part of every part, on a thread each when there are several; the results in part order."""
    if len(parts) == 1:
        return [run_part(parts[0])]
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        return list(pool.map(run_part, parts))


def merged_counts(runs: list[dict]) -> dict:
    """The first part's groups with every part's zero, total and saturation counts added in."""
    groups = runs[0]
    for other in runs[1:]:
        for name, g in groups.items():
            g.zeros += other[name].zeros
            g.total += other[name].total
            for q in SAT_QUANTITIES:
                g.counts[q] += other[name].counts[q]
    return groups


@functools.cache
def _blas_controller() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()  # finds the loaded BLAS libraries once (~10 ms)


def one_blas_thread(fn):
    """`fn` with BLAS limited to one thread while it runs: an engine step's products are small
    and many, and waking BLAS's other threads for each costs more than it saves (on a busy
    2-core machine a 1 x 128 x 128 product took ~350 us instead of ~5 us)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _blas_controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return run
