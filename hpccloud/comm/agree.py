"""Fail together: an error on one rank becomes the same error on every rank.

Pattern from Devito's ``_raise_on_error``: every rank runs its part, then the
ranks exchange a small error record; if any rank failed, every rank raises the
error of the lowest failing rank. No rank is left waiting in a later collective
for a peer that already gave up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hpccloud.errors import ERRORS_BY_NAME, HpccloudError, PeerFailed

T = TypeVar("T")


def _record(exc: BaseException, rank: int) -> tuple[str, str, int]:
    if isinstance(exc, HpccloudError):
        return type(exc).__name__, str(exc), rank
    return "PeerFailed", f"rank {rank}: {type(exc).__name__}: {exc}", rank


def error_record(exc: BaseException | None, rank: int) -> tuple[str, str, int] | None:
    """A small picklable record of ``exc`` (None if no error) to gather from every rank."""
    return None if exc is None else _record(exc, rank)


def raise_gathered(records, exc: BaseException | None) -> None:
    """Raise on every rank if any of the allgathered ``records`` is an error.

    ``records`` come from :func:`error_record` on each rank (same list on every
    rank); ``exc`` is this rank's own exception, re-raised unchanged here when it
    is not an hpccloud error (so its traceback is kept) and as
    :class:`PeerFailed` elsewhere. Lets a caller piggyback the error exchange on
    a collective it makes anyway (one message round instead of two).

    >>> raise_gathered([None, None], None)  # nothing failed: returns
    """
    failed = [r for r in records if r is not None]
    if not failed:
        return
    if exc is not None and not isinstance(exc, HpccloudError):
        raise exc
    name, message, _ = failed[0]
    err = ERRORS_BY_NAME.get(name, HpccloudError)(message)
    err.collective = True  # raised on every rank: the CLI prints it once
    raise err


def raise_if_any(comm, exc: BaseException | None) -> None:
    """Collective: raise on every rank if ``exc`` is not None on any rank.

    A non-hpccloud exception is re-raised unchanged on the rank where it
    happened (so its traceback is kept) and as :class:`PeerFailed` elsewhere.
    The common case — nobody failed — is one sleeping allgather of a flag
    (so ranks waiting here leave shared cores alone, and the stall watchdog
    sees the wait); the error records are gathered only when a rank failed.
    """
    from hpccloud.comm.wait import sleeping_allgather

    flags = sleeping_allgather(comm, [0.0 if exc is None else 1.0])
    if not flags.any():
        return
    raise_gathered(comm.allgather(error_record(exc, comm.Get_rank())), exc)


def agree(comm, fn: Callable[[], T]) -> T:
    """Run ``fn()`` on every rank of ``comm``; if it fails anywhere, fail everywhere."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - every failure must reach the peers
        raise_if_any(comm, exc)
        raise  # unreachable: raise_if_any raised
    raise_if_any(comm, None)
    return result


def bcast_result(comm, fn: Callable[[], T], root: int = 0) -> T:
    """Run ``fn()`` on ``root`` only and broadcast the result or the error.

    The other ranks wait in a sleeping broadcast: with ranks sharing a core, a
    spinning MPI wait took the core from ``root`` while it planned (a default-job
    plan at 4 ranks on 2 cores took ~65 ms against ~15 ms at 2 ranks).
    """
    from hpccloud.comm.wait import sleeping_bcast

    payload: tuple[str, Any] | None
    if comm.Get_rank() == root:
        try:
            payload = ("ok", fn())
        except HpccloudError as exc:
            payload = ("err", (type(exc).__name__, str(exc)))
        except Exception as exc:  # noqa: BLE001
            payload = ("err", ("PeerFailed", f"rank {root}: {type(exc).__name__}: {exc}"))
    else:
        payload = None
    kind, value = sleeping_bcast(comm, payload, root=root)
    if kind == "err":
        name, message = value
        err = ERRORS_BY_NAME.get(name, HpccloudError)(message)
        err.collective = True
        raise err
    return value


_UNSET = type("_Unset", (), {"__repr__": lambda self: "unset"})()


def settings_differences(per_rank: Sequence[Mapping[str, Any]], limit: int = 4) -> list[str]:
    """Words for the keys whose values differ between ranks (at most ``limit`` keys),
    each with rank 0's value and the first rank that has another.

    >>> settings_differences([{"steps": 30, "seed": 0}, {"steps": 30, "seed": 0}, {"steps": 20, "seed": 0}])
    ['steps = 30 on rank 0, 20 on rank 2']
    >>> settings_differences([{"json": "a.json"}, {}])
    ["json = 'a.json' on rank 0, unset on rank 1"]
    """
    out: list[str] = []
    for key in sorted(set().union(*per_rank)):
        first = per_rank[0].get(key, _UNSET)
        other = next((r for r, d in enumerate(per_rank) if d.get(key, _UNSET) != first), None)
        if other is None:
            continue
        if len(out) == limit:
            out.append("...")
            break
        out.append(f"{key} = {first!r} on rank 0, {per_rank[other].get(key, _UNSET)!r} on rank {other}")
    return out


def same_on_every_rank(comm, what: str, settings: Mapping[str, Any]) -> None:
    """Collective: refuse a job whose ranks were started with different settings.

    An MPMD launch (``mpiexec -n 1 hpccloud run --steps 30 : -n 3 hpccloud run``),
    or a config file that differs between nodes, gave ranks that ran different
    loops and waited for each other until the job was killed. One sleeping
    ``Allreduce(MAX)`` of ``[d, -d]`` (``d``: 52 bits of the settings'
    :func:`~hpccloud.io.provenance.config_digest`, exact in a float64), as the
    transport agrees on a plan: the settings are the same everywhere iff
    ``max d == -max(-d)``, whatever the rank count. Only when they differ are they
    gathered, to name the keys. Raises :class:`~hpccloud.errors.ConfigError` on
    every rank.
    """
    from mpi4py import MPI

    from hpccloud.comm.wait import sleeping_allreduce
    from hpccloud.errors import ConfigError
    from hpccloud.io.provenance import config_digest

    mine = dict(settings)
    d = float(int(config_digest(mine)[:13], 16))
    top = sleeping_allreduce(comm, [d, -d], op=MPI.MAX)
    if top[0] == -top[1]:
        return
    diffs = settings_differences(comm.allgather(mine))
    err = ConfigError(f"{what}: the ranks were started with different settings ({'; '.join(diffs)}); "
                      "start every rank with the same options and config file (in an MPMD launch "
                      "`A : B` repeat them after each `:`)")
    err.collective = True
    raise err


__all__ = ["PeerFailed", "agree", "bcast_result", "error_record", "raise_gathered", "raise_if_any",
           "same_on_every_rank", "settings_differences"]
