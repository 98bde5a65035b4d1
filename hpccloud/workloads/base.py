"""What a workload is to the runner: shards, their data, and one step of work on each.

A workload owns the meaning of a shard's stored array; the runner owns the
loop, the timing, the balancing and the I/O. Every method that takes ``comm``
is collective; all others are local to one shard and know nothing of MPI.

Contract the runner relies on for the multi-rank == single-rank check: a
shard's result depends only on the workload parameters, the shard id, the step
and (for halo workloads) its neighbours' faces — never on which rank holds it
or how many ranks there are. Reductions across shards combine per-shard
partials in shard-id order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpccloud.errors import InvalidArgument
from hpccloud.io.provenance import Axis
from hpccloud.shards import ShardMap

#: what a rank holds before any data: the interpreter, Numba, MPI (~220 MB measured)
BASE_BYTES = 256 << 20


class Workload:
    """Base class; see the module docstring. Subclasses set the class attributes."""

    name: str = ""
    #: registry name of the kernel; the speed model keys rates by it
    kernel: str = ""
    #: other registry kernels a step calls (compiled before the run with ``kernel``)
    helper_kernels: tuple[str, ...] = ()
    #: stored arrays carry a halo of width 1 that the runner exchanges before each step
    halo: bool = False
    #: bit-for-bit equal to the single-rank run (else within ``rtol``)
    exact: bool = True
    rtol: float = 0.0
    #: the step holds MPI's blocking collectives after the kernels (begin/end_step): a rank
    #: done early spins in them, on its core-mates' core where ranks share cores, so the
    #: planner prices those ranks' compute rank by rank, not pooled per core
    #: (:class:`~hpccloud.balance.calibration.Calibration` ``pool_solo``)
    spinning_collectives: bool = False
    #: the runner may recycle the arrays of shards that left (the workload keeps no view of them)
    recycle_departed: bool = False
    #: :meth:`work_estimate` models how each shard's work changes from step to step (a
    #: moving hot spot, a zoom); the default's constant figure does not
    forecasts_work: bool = False
    #: every shard keeps the shape :meth:`shard_map` gives it (a restart refuses a checkpoint
    #: whose shapes differ); False when :meth:`end_step` changes shapes (only the extents
    #: after the first must then stay)
    fixed_shapes: bool = True
    #: default parameters; ``params`` given by the user override them
    defaults: dict[str, Any] = {}
    #: what the result array holds (CF ``long_name``) and its units (None: no physical unit)
    result_long_name: str = ""
    result_units: str | None = None
    #: allowed values per parameter: ``(low, high)`` inclusive for numbers (None: no
    #: bound; floats must also be finite), or a tuple of choices for strings
    limits: dict[str, Any] = {}

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0):
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise InvalidArgument(
                f"workload {self.name!r}: unknown parameter {unknown[0]!r}. "
                f"Fix: use one of {sorted(self.defaults)}")
        merged = dict(self.defaults)
        for key, value in params.items():
            merged[key] = self._typed(key, value)
        self.params = merged
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidArgument(f"--seed {seed!r}: must be an integer from 0 to 2**63 - 1. "
                                  "Fix: e.g. --seed 1")
        self.seed = int(seed)
        for key in self.defaults:
            self._check_limit(key, self.params[key])
        self.check_params()
        #: a :class:`~hpccloud.comm.bufpool.BufferPool` the runner shares: arrays of shards that
        #: left this rank come back from it warm (no page faults) for shards that arrive
        self.pool = None
        self._forecasts: dict[int, np.ndarray] = {}

    def _typed(self, key: str, value: Any) -> Any:
        """``value`` as the type of the default; strings (from ``--param``) are parsed.
        No silent truncation: 2.5 is not an integer, true is not a number."""
        want = type(self.defaults[key])
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
        try:
            if want is bool:
                return _as_bool(value)
            if isinstance(value, bool):
                raise TypeError(value)
            if want is int:
                if isinstance(value, float):
                    if not value.is_integer() or abs(value) > 2**53:  # beyond: not exact
                        raise ValueError(value)
                    return int(value)
                out = int(value) if isinstance(value, int) else int(str(value).strip())
                if not -(2**63) <= out < 2**63:  # it is stored as an int64 attribute of the output
                    raise OverflowError(value)
                return out
            if want is float:
                return float(value) if isinstance(value, int | float) else float(str(value).strip())
            if not isinstance(value, str):
                raise TypeError(value)
            return value
        except (TypeError, ValueError, OverflowError) as exc:
            what = ("does not fit a 64-bit integer" if isinstance(exc, OverflowError) and want is int
                    else f"is not {kind.get(want, want.__name__)}")
            raise InvalidArgument(
                f"workload {self.name!r}: parameter {key}={_short(value)} {what}. Fix: e.g. "
                f"{key}={self.defaults[key]!r}") from None

    def _check_limit(self, key: str, value: Any) -> None:
        limit = self.limits.get(key)
        bad = None
        if isinstance(value, float) and not math.isfinite(value):
            bad = "must be a finite number"
        elif isinstance(limit, tuple) and limit and isinstance(limit[0], str):
            if value not in limit:
                bad = f"must be one of {list(limit)}"
        elif limit is not None:
            low, high = limit
            if (low is not None and value < low) or (high is not None and value > high):
                lo = "" if low is None else f">= {low}"
                hi = "" if high is None else f"<= {high}"
                bad = f"must be {' and '.join(x for x in (lo, hi) if x)}"
        if bad:
            raise InvalidArgument(f"workload {self.name!r}: parameter {key}={_short(value)} {bad}. "
                                  f"Fix: e.g. --param {key}={self.defaults[key]}")

    def check_params(self) -> None:
        """Checks between parameters (e.g. ``k <= n``); raise :class:`InvalidArgument`."""

    def need(self, ok: bool, message: str, fix: str) -> None:
        """Raise the standard parameter error unless ``ok``."""
        if not ok:
            raise InvalidArgument(f"workload {self.name!r}: {message}. Fix: {fix}")

    # ---------------------------------------------------------------- resources
    def data_bytes(self) -> int:
        """Bytes of all shards' stored arrays together (the global data)."""
        raise NotImplementedError

    def result_bytes(self) -> int:
        """Bytes of all result arrays together (what ``--output`` writes)."""
        return self.data_bytes()

    def replicated_bytes(self) -> int:
        """Bytes every rank holds whatever its share (e.g. a gathered vector)."""
        return 0

    #: peak bytes a rank holds per byte of its data share (scratch, send/receive
    #: buffers, recycled arrays); 3 covers the stored array, one scratch copy and a
    #: migration's incoming buffers
    working_factor: float = 3.0

    def estimate(self, size: int, output: bool = False) -> ResourceEstimate:
        """What one rank of a ``size``-rank job will allocate, and what the job writes.

        A rank's share is taken as 1.5 times the even share (the balancer gives a
        fast rank more), capped at the whole; a region's lowest rank also gathers
        that region's results when writing output (counted as the whole result);
        plus :data:`BASE_BYTES` for the interpreter, Numba and MPI. Measured
        (stencil2d n=8192, 512 MiB of cells, 2 ranks, 3 steps, ``--output``): peak
        RSS 1.39 GB on rank 0, 0.73 GB on rank 1; estimate 1.9 GiB per rank.
        """
        data = self.data_bytes()
        share = min(data, 1.5 * data / max(1, size))
        peak = BASE_BYTES + self.working_factor * share + self.replicated_bytes()
        if output:
            peak += self.result_bytes()
        return ResourceEstimate(int(peak), int(self.result_bytes()), int(data))

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised array, recycled from :attr:`pool` when it holds one of that size."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if self.pool is None or nbytes == 0:
            return np.empty(shape, dtype)
        return self.pool.take(nbytes).view(dtype).reshape(shape)

    def probe_inputs(self) -> dict[str, Any]:
        """Keyword arguments for the kernel's ``make_inputs`` in the speed probe: what makes
        a probe unit cost what one of this workload's units costs (k-means: its clusters
        and features; by default none)."""
        return {}

    def work_estimate(self, shard, step: int) -> float:
        """Work units ``shard`` will take at ``step``, before any step has measured it (the
        initial placement uses it); by default the map's own figure."""
        return float(shard.work_units)

    def work_forecast(self, shards, steps) -> np.ndarray:
        """:meth:`work_estimate` of every shard at every step, shape ``(len(steps), len(shards))``.

        ``shards`` is the whole map's (by id). Each step is estimated once: a
        rebalance asks for the window it measured, which the one before asked
        for as its future. Steps before the earliest asked for are forgotten.
        """
        steps = [int(t) for t in steps]
        for t in [t for t in self._forecasts if t < min(steps, default=0)]:
            del self._forecasts[t]
        out = np.empty((len(steps), len(shards)))
        for i, t in enumerate(steps):
            row = self._forecasts.get(t)
            if row is None or row.size != len(shards):
                row = np.array([self.work_estimate(s, t) for s in shards], np.float64)
                self._forecasts[t] = row
            out[i] = row
        return out

    def forget(self, sid: int) -> None:
        """Shard ``sid`` left this rank: drop (or recycle) what the workload kept for it."""

    # ---------------------------------------------------------------- layout
    def shard_map(self, size: int) -> ShardMap:
        """The initial shard map for ``size`` ranks (owners before residency placement)."""
        raise NotImplementedError

    def initial(self, shard) -> np.ndarray:
        """The stored array of ``shard`` at step 0, made from the parameters alone."""
        raise NotImplementedError

    def refuse_residency(self, shard_map: ShardMap, policy) -> None:
        """Raise :class:`~hpccloud.errors.ConfigError` if running ``shard_map`` under ``policy``
        would send data where it may not live by the workload's own collectives (not by
        migration: the planners keep that). Called on every rank, before any data exists,
        with the map as placed; pure, so every rank raises the same error. Default: the
        workload's steps send nothing derived from a shard off its rank."""

    # ---------------------------------------------------------------- stepping
    def begin_step(self, comm, shard_map: ShardMap, local: dict[int, np.ndarray], step: int) -> None:
        """Collective work before the shards are computed (e.g. gather a vector)."""

    def compute(self, shard, arr: np.ndarray, step: int) -> tuple[np.ndarray, float]:
        """Run the kernel on one shard; return ``(new stored array, work units done)``."""
        raise NotImplementedError

    def end_step(self, comm, shard_map: ShardMap, local: dict[int, np.ndarray],
                 step: int) -> ShardMap:
        """Collective work after the shards are computed; may return a changed map."""
        return shard_map

    # ---------------------------------------------------------------- moving and saving
    def pack(self, shard, arr: np.ndarray) -> np.ndarray:
        """The payload that moves or is checkpointed (e.g. without the halo)."""
        return arr

    def unpack(self, shard, payload: np.ndarray) -> np.ndarray:
        """Rebuild the stored array from a payload."""
        return payload

    #: bytes :meth:`unpack` writes into arrays of its own per byte received (0: it keeps the
    #: payload; 1: it copies it, e.g. into a tile with a halo ring). A migration's receivers
    #: touch that much new memory besides their receive buffers, and the model prices it
    #: (:func:`~hpccloud.balance.calibration.fresh_bytes`); a test holds every workload's
    #: figure to what its unpack does
    unpack_copies: float = 0.0

    def result_map(self, shard_map: ShardMap) -> ShardMap:
        """The shard map of the result arrays (default: the data's own)."""
        return shard_map

    def result(self, shard, arr: np.ndarray) -> np.ndarray:
        """The result array of one shard (shape of ``result_map``'s shard)."""
        return arr

    def result_axes(self, shape: tuple[int, ...], steps: int) -> list[Axis]:
        """Coordinates of the result's dimensions after ``steps`` steps (for the output's
        dimension scales and XDMF geometry); by default the index along each axis."""
        names = {1: ("i",), 2: ("y", "x"), 3: ("z", "y", "x")}.get(len(shape))
        names = names or tuple(f"dim_{k}" for k in range(len(shape)))
        return [Axis(name, np.arange(n), None, "index") for name, n in zip(names, shape, strict=True)]

    def state(self) -> dict[str, Any]:
        """Replicated state to checkpoint (JSON-able)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""

    def summary(self) -> dict[str, Any]:
        """Small figures for the report (e.g. centroids, an eigenvalue estimate)."""
        return {}


def _short(value: Any) -> str:
    """A bounded repr for messages (a value may be a 10,000-character string)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "..." + text[-10:]


@dataclass(frozen=True)
class ResourceEstimate:
    """Bytes one rank allocates at its peak, and bytes the job writes."""

    peak_bytes_per_rank: int
    output_bytes: int
    checkpoint_bytes: int


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def rows_map(n_rows: int, n_cols: int | None, n_shards: int, dtype, size: int,
             classes: list[str]) -> ShardMap:
    """Row blocks of an ``(n_rows, n_cols)`` array (or 1-D when ``n_cols`` is None)."""
    from hpccloud.shards import Shard, assign_owners, split_even

    spans = split_even(n_rows, n_shards)
    itemsize = np.dtype(dtype).itemsize
    owners = assign_owners(np.array([b - a for a, b in spans], float), size)
    shards = []
    for i, (a, b) in enumerate(spans):
        shape = (b - a,) if n_cols is None else (b - a, n_cols)
        index = (slice(a, b),) if n_cols is None else (slice(a, b), slice(0, n_cols))
        shards.append(Shard(i, index, shape, np.dtype(dtype).str, int(np.prod(shape)) * itemsize,
                            float(b - a), classes[i], int(owners[i]), ()))
    gshape = (n_rows,) if n_cols is None else (n_rows, n_cols)
    return ShardMap(gshape, dtype, shards, 0, (n_shards,) if n_cols is None else (n_shards, 1), 0)


def class_by_fraction(n: int, fraction: float, restricted: str = "eu-personal",
                      default: str = "public") -> list[str]:
    """The first ``fraction`` of ``n`` shards get the restricted class."""
    k = int(round(fraction * n))
    return [restricted if i < k else default for i in range(n)]
