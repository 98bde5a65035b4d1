"""Compile the Numba kernels once per job: rank 0 first, then everyone else.

Cold ranks compiling at the same time each pay ~0.6 s per parallel kernel (and
on an oversubscribed node they slow each other down). :func:`warm_up` lets
rank 0 compile (and write Numba's on-disk cache), then a barrier, then the
other ranks load the compiled code from the cache.

This module never imports mpi4py: ``comm`` is any object with ``Get_rank``,
``Barrier`` and ``allgather`` (an mpi4py communicator), or None for one process.

Example
-------
>>> from hpccloud.compile import warm_up
>>> seconds = warm_up(["triad"])
>>> sorted(seconds)
['triad']
"""

from __future__ import annotations

import time

import numpy as np

from hpccloud.errors import InvalidArgument

TINY_UNITS = 64


def _warm(names: list[str], dtypes) -> dict[str, float]:
    import kernels

    seconds = {}
    for name in names:
        spec = kernels.get(name)
        wanted = spec.dtypes if dtypes is None else [d for d in spec.dtypes
                                                     if np.dtype(d) in dtypes]
        t0 = time.perf_counter()
        for dtype in wanted:
            spec.kernel(*spec.make_inputs(TINY_UNITS, dtype, 0))
        seconds[name] = time.perf_counter() - t0
    return seconds


def warm_up(names=None, comm=None, dtypes=None, meanwhile=None) -> dict[str, float]:
    """Compile (or load from cache) the kernels ``names`` for each dtype they support.

    Parameters
    ----------
    names : iterable of str, optional
        Registry names; default every registered kernel.
    comm : mpi4py communicator, optional
        Rank 0 compiles first, then ``comm.Barrier()``, then the other ranks load
        from Numba's cache. A failure on any rank is raised on every rank (no
        rank is left waiting at the barrier).
    dtypes : iterable of dtypes, optional
        Only these dtypes (default: every dtype each kernel supports).
    meanwhile : callable, optional
        With ``comm``: rank 0 calls it while the other ranks load from the
        cache (rank 0 would only wait there), e.g. to load the planner's own
        compiled code (:func:`hpccloud.balance.warm.warm_planner`). Its failure
        is raised on every rank.

    Returns
    -------
    dict
        Kernel name → seconds this rank spent on its first calls (compile on
        rank 0 with a cold cache, cache load elsewhere).
    """
    import kernels

    if names is None:
        names = kernels.names()
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    if dtypes is not None:
        dtypes = {np.dtype(d) for d in dtypes}

    def check():
        for name in names:
            kernels.get(name)  # InvalidArgument naming the unknown kernel
        if dtypes is not None and not dtypes:
            raise InvalidArgument("warm_up: dtypes is empty. Fix: omit it or name a dtype")

    if comm is None:
        check()
        return _warm(names, dtypes)

    from hpccloud.comm.agree import agree

    agree(comm, check)
    rank = comm.Get_rank()
    result: dict[str, float] = {}
    if rank == 0:
        result = agree(comm, lambda: _warm(names, dtypes))
    else:
        agree(comm, dict)  # pairs with rank 0's agree: raises here if rank 0 failed
    comm.Barrier()
    if rank != 0:
        result = agree(comm, lambda: _warm(names, dtypes))
    else:
        agree(comm, meanwhile or dict)
    return result
