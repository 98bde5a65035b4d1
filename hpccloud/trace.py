"""The per-rank timeline as Chrome trace-event JSON (Perfetto, ``chrome://tracing``).

``hpccloud run --trace FILE`` records what every rank does — halo exchange,
each shard's kernel, the workload's collectives, waits, rebalance phases,
transfers, checkpoints and output — and writes one file that Perfetto
(https://ui.perfetto.dev) or ``chrome://tracing`` opens:

* every activity is a *complete* event (``"ph": "X"``) with a start ``ts`` and a
  duration ``dur`` in microseconds;
* ``pid`` is the rank, named ``"rank 2 (eu-north)"`` by a ``process_name``
  metadata event; ``tid`` is the activity (one lane each: ``step``, ``halo``,
  ``kernel``, ``collective``, ``wait``, ``rebalance``, ``transfer``, ``io``),
  named by ``thread_name`` events;
* all ranks share one clock: each rank measures its ``perf_counter`` offset to
  rank 0's with a ping-pong (Cristian's method, best of several round trips),
  so events of different ranks and hosts line up to about half a round trip;
* rank 0 gathers the events at the end and writes the file atomically.

Recording costs two ``perf_counter`` calls and a tuple append per event; a
disabled :class:`Tracer` records nothing.

>>> tr = Tracer()
>>> with tr.span("plan", "rebalance", after_step=9):
...     pass
>>> tr.add("halo", "halo", 1.0, 1.5, step=0)
>>> [e["name"] for e in tr.chrome_events(rank=0, region="eu-north") if e["ph"] == "X"]
['plan', 'halo']
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: the lanes (trace "threads") in display order; tid = index + 1
LANES = ("step", "halo", "kernel", "collective", "wait", "rebalance", "transfer", "io")
_TID = {lane: i + 1 for i, lane in enumerate(LANES)}
_CLOCK_TAG = 0x7ACE


class Tracer:
    """Events of one rank, in this rank's ``time.perf_counter`` seconds.

    Parameters
    ----------
    enabled : bool
        When False every method returns at once and nothing is kept.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._events: list[tuple[str, str, float, float, dict[str, Any] | None]] = []
        #: this rank's perf_counter + offset_s = rank 0's perf_counter (see :meth:`sync_clock`)
        self.offset_s = 0.0
        #: rank 0's perf_counter at the clock sync: time zero of the trace
        self.origin_s = 0.0
        #: time.time() - time.perf_counter() on this rank (to place POSIX-stamped records)
        self.posix_minus_perf_s = time.time() - time.perf_counter()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, name: str, lane: str, start_s: float, end_s: float, **args: Any) -> None:
        """Record ``name`` on ``lane`` from ``start_s`` to ``end_s`` (perf_counter seconds)."""
        if self.enabled:
            self._events.append((name, lane, start_s, end_s - start_s, args or None))

    def add_posix(self, name: str, lane: str, end_posix_s: float, dur_s: float, **args: Any) -> None:
        """Record an event that ended at POSIX time ``end_posix_s`` and lasted ``dur_s``."""
        if self.enabled:
            end = end_posix_s - self.posix_minus_perf_s
            self._events.append((name, lane, end - dur_s, dur_s, args or None))

    @contextlib.contextmanager
    def span(self, name: str, lane: str, **args: Any) -> Iterator[None]:
        """Record the ``with`` block as one event."""
        if not self.enabled:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._events.append((name, lane, t0, time.perf_counter() - t0, args or None))

    # ------------------------------------------------------------------ clocks
    def sync_clock(self, comm, rounds: int = 8) -> None:
        """Collective: measure this rank's clock offset to rank 0 (Cristian's method).

        Rank 0 answers ``rounds`` ping-pongs from every other rank in turn with its
        ``perf_counter``; a rank takes the reply of its shortest round trip and
        assumes it was read half-way through. Call it once, before the events that
        matter (every rank, even when tracing is off, so the ranks stay in step).
        """
        rank, size = comm.Get_rank(), comm.Get_size()
        buf = np.zeros(1)
        offset = 0.0
        for peer in range(1, size):
            if rank == 0:
                for _ in range(rounds):
                    comm.Recv(buf, source=peer, tag=_CLOCK_TAG)
                    buf[0] = time.perf_counter()
                    comm.Send(buf, dest=peer, tag=_CLOCK_TAG)
            elif rank == peer:
                best = float("inf")
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    comm.Send(buf, dest=0, tag=_CLOCK_TAG)
                    comm.Recv(buf, source=0, tag=_CLOCK_TAG)
                    t1 = time.perf_counter()
                    if t1 - t0 < best:
                        best, offset = t1 - t0, float(buf[0]) - (t0 + t1) / 2
        self.offset_s = offset
        self.origin_s = float(comm.bcast(time.perf_counter() if rank == 0 else None, root=0))
        self.posix_minus_perf_s = time.time() - time.perf_counter()

    # ------------------------------------------------------------------ output
    def chrome_events(self, rank: int, region: str | None = None) -> list[dict[str, Any]]:
        """This rank's events in Chrome trace-event form (µs on rank 0's clock)."""
        label = f"rank {rank}" + (f" ({region})" if region else "")
        out: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": label}},
            {"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "args": {"sort_index": rank}},
        ]
        used = sorted({lane for _, lane, _, _, _ in self._events}, key=lambda x: _TID.get(x, 99))
        for lane in used:
            tid = _TID.get(lane, len(LANES) + 1)
            out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": lane}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": rank, "tid": tid,
                        "args": {"sort_index": tid}})
        shift = self.offset_s - self.origin_s
        for name, lane, start, dur, args in self._events:
            ev = {"name": name, "cat": lane, "ph": "X", "pid": rank, "tid": _TID.get(lane, len(LANES) + 1),
                  "ts": round((start + shift) * 1e6, 3), "dur": round(max(dur, 0.0) * 1e6, 3)}
            if args:
                ev["args"] = args
            out.append(ev)
        return out

    def gather_write(self, comm, path: str | os.PathLike | None, regions: Sequence[str],
                     other: dict[str, Any] | None = None) -> None:
        """Collective: gather every rank's events to rank 0, which writes ``path`` atomically
        (an OTF2 archive folder when ``path`` ends in ``.otf2``, else Chrome JSON).

        ``regions[r]`` names rank ``r``'s region; ``other`` goes to ``otherData``
        (e.g. the run id). An error writing the file is raised on every rank.
        """
        from hpccloud.comm.agree import bcast_result

        rank = comm.Get_rank()
        mine = self.chrome_events(rank, regions[rank] if rank < len(regions) else None)
        parts = comm.gather(mine, root=0)

        def write() -> None:
            if path is None:
                return
            events = [ev for part in parts for ev in part]
            if os.fspath(path).endswith(".otf2"):
                from hpccloud.trace_otf2 import write_otf2

                write_otf2(path, events)
            else:
                write_trace(path, events, other)

        bcast_result(comm, write)


def write_trace(path: str | os.PathLike, events: list[dict[str, Any]],
                other: dict[str, Any] | None = None) -> None:
    """Write a Chrome trace-event JSON object file atomically."""
    from hpccloud.io.atomic import write_bytes_atomic

    doc = {"traceEvents": events, "displayTimeUnit": "ms",
           "otherData": {"generator": "hpccloud", **(other or {})}}
    write_bytes_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def load_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete (``"X"``) events of a trace file."""
    with open(path) as fh:
        doc = json.load(fh)
    return [ev for ev in doc["traceEvents"] if ev.get("ph") == "X"]


__all__ = ["LANES", "Tracer", "load_trace", "write_trace"]
