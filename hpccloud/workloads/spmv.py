"""``spmv``: power iteration ``x ← A x / ‖A x‖`` on a sparse matrix cut into row blocks.

Shard ``s`` holds the block ``x_s`` of the vector; its CSR rows of ``A`` are a
deterministic function of ``(seed, s)`` with power-law row lengths (uneven
cost), regenerated on whichever rank holds the shard. Each step gathers the
whole ``x`` on every rank as MPI buffers (``Allgatherv``), multiplies the local
row blocks, and normalises with the norm summed in shard-id order — bit-for-bit
the same on any rank count. Sums of squares go through ``kernels.reductions.dot``
(compiled, in a fixed order at any thread count): ``math.fsum`` over the
200,000-entry vector cost ~12 ms a step, more than the product itself.

Every rank sees the whole vector, so every shard's data class must be allowed
in every region of the job; otherwise the run refuses to start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hpccloud.errors import ConfigError
from hpccloud.workloads.base import Workload, rows_map


class SpMV(Workload):
    name = "spmv"
    kernel = "spmv"
    spinning_collectives = True  # its end_step gathers (MPI blocking)
    helper_kernels = ("dot",)
    result_long_name = "power-iteration vector (unit 2-norm)"
    defaults = {
        "n": 200_000,      # rows (= columns)
        "shards": 32,
        "mean_row": 16,    # mean non-zeros per row
    }
    limits = {"n": (1, (1 << 31) - 1), "shards": (1, None), "mean_row": (1, 10_000)}

    def check_params(self):
        p = self.params
        self.need(p["shards"] <= p["n"], f"shards={p['shards']} for n={p['n']} rows",
                  "use shards <= n")

    def data_bytes(self):
        # the vector blocks and, per shard, its CSR rows (int32 indptr and indices, f8 data)
        p = self.params
        return p["n"] * 8 + p["n"] * (8 + 12 * p["mean_row"])

    def result_bytes(self):
        return self.params["n"] * 8

    def replicated_bytes(self):
        return 4 * self.params["n"] * 8  # the gathered x, its receive buffer, x * x, the send

    def __init__(self, params=None, seed=0) -> None:
        super().__init__(params, seed)
        import kernels
        from kernels.reductions import dot

        self._kernel = kernels.get(self.kernel).kernel
        self._dot = dot
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._x = np.empty(0)
        self._x_checked = False
        self._recv = np.empty(0)
        self._layout: tuple[tuple[bytes, int], _Gather] | None = None
        self._norm2: dict[int, float] = {}
        self.eigenvalue = float("nan")
        self.policy = None

    def shard_map(self, size):
        p = self.params
        m = rows_map(p["n"], None, p["shards"], "<f8", size, ["public"] * p["shards"])
        # a shard's work is its non-zeros (the kernel's units, and the speed probe's), not
        # its rows: the initial placement plans on it (rows were 1/16 of it). Each shard's
        # row lengths are scaled to mean_row (matrix_rows), so rows × mean_row is its count
        # to within the rounding (0.2-1 % at the default size), known without drawing them
        return m.with_work_units([s.shape[0] * p["mean_row"] for s in m.shards])

    def initial(self, shard):
        self.matrix_rows(shard)  # built with the data, not in the first step's timers
        g = np.random.default_rng([self.seed, 5, shard.id])
        return g.uniform(0.5, 1.5, size=shard.shape[0])

    def matrix_rows(self, shard):
        """The CSR rows of ``shard`` (cached); a function of the seed and the shard id only.

        Row lengths follow a power law, ``P(len >= k) ~ k^-0.7`` (as ``zipf(1.7)``)
        by inverse transform of uniform draws, scaled to ``mean_row``; the entries
        are uniform in [0, 1): non-negative, so the matrix has a dominant
        eigenvalue. Uniform draws only: ~1.1 ms a shard at the default size
        (``zipf`` and ``standard_normal`` took ~2.9 ms, ~20 steps of the shard's
        product). A shard's rows are built where it lives, when it is created or
        arrives (:meth:`initial`, :meth:`unpack`), so the step timers measure
        the product alone and a move pays its rows in its unpack time — which
        the calibration prices per byte moved, from the setup's timed round trip
        (:func:`~hpccloud.measure.probe.probe_packing`) until a move is measured.
        """
        rows = self._rows.get(shard.id)
        if rows is None:
            p = self.params
            g = np.random.default_rng([self.seed, 3, shard.id])
            nrows = shard.shape[0]
            tail = (1.0 - g.random(nrows)) ** (-1.0 / 0.7)  # in [1, inf): u in (0, 1]
            lengths = np.floor(np.minimum(tail, 64 * p["mean_row"]))
            lengths = np.maximum(1, np.rint(lengths * p["mean_row"] / lengths.mean())).astype(np.int64)
            indptr = np.zeros(nrows + 1, np.int64)
            np.cumsum(lengths, out=indptr[1:])
            indices = g.integers(0, p["n"], size=int(indptr[-1]), dtype=np.int32)
            if indptr[-1] < np.iinfo(np.int32).max:
                # int32 as the kernel's warm-up compiles it (and scipy builds it): with int64
                # the product compiled again in the first step, on every rank at once with a
                # cold cache (1.1-1.5 s on a fresh install)
                indptr = indptr.astype(np.int32)
            data = g.random(indices.size)
            rows = self._rows[shard.id] = (indptr, indices, data)
        return rows

    def unpack(self, shard, payload):
        self.matrix_rows(shard)  # built on arrival: timed as the move's, not as a step's
        return payload

    def refuse_residency(self, shard_map, policy):
        regions = set(policy.topology.rank_region)
        for dc in sorted(set(shard_map.data_classes())):
            if not regions <= set(policy.allowed_regions(dc)):
                raise ConfigError(f"spmv: every rank needs the whole vector, but data class "
                                  f"{dc!r} may not live in all regions {sorted(regions)}. "
                                  "Fix: run spmv on public data only")

    def begin_step(self, comm, shard_map, local, step):
        from mpi4py import MPI

        if self.policy is not None:  # refused before any data (refuse_residency); kept here too
            self.refuse_residency(shard_map, self.policy)
        lay = self._gather_layout(shard_map, comm.Get_size())
        n = self.params["n"]
        if self._x.size != n:
            self._x = np.empty(n)  # one buffer for the run: a fresh 1.6 MB a step faults its pages
        x = self._x
        mine = sorted(local)
        if lay.direct:  # every rank's blocks are one run of rows: gather into x itself
            for s in mine:
                x[lay.rows[s]] = local[s]
            comm.Allgatherv(MPI.IN_PLACE, [x, (lay.counts, lay.displs), MPI.DOUBLE])
        else:
            send = np.concatenate([local[s] for s in mine]) if mine else np.empty(0)
            if self._recv.size != n:
                self._recv = np.empty(n)
            comm.Allgatherv([send, MPI.DOUBLE], [self._recv, (lay.counts, lay.displs), MPI.DOUBLE])
            # place each rank's blocks (in its shard-id order) at their global rows
            for s, pos in lay.places:
                x[lay.rows[s]] = self._recv[pos:pos + lay.sizes[s]]
        if not self._x_checked:
            # later steps' x is A x / |A x| with |A x| > 0 checked (end_step): never all zeros
            if not np.any(x):
                err = ConfigError("spmv: the vector is all zeros, so the power iteration has no "
                                  "direction to follow. Fix: give an --input vector with a non-zero entry")
                err.collective = True  # x is the same on every rank: every rank raises this
                raise err
            self._x_checked = True

    def _gather_layout(self, shard_map, size: int) -> _Gather:
        """How :meth:`begin_step` gathers x for this owner map (kept until the owners change)."""
        key = (shard_map.owners_bytes(), size)
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, _Gather.of(shard_map, size))
        return self._layout[1]

    def compute(self, shard, arr, step):
        indptr, indices, data = self.matrix_rows(shard)
        # the rows are built by matrix_rows (columns in [0, n), lengths >= 1): skip the scans
        y = self._kernel(indptr, indices, data, self._x, trusted=True)
        self._norm2[shard.id] = self._dot(y, y)  # fixed order: any thread count
        return y, float(data.size)

    def end_step(self, comm, shard_map, local, step):
        parts: dict[int, float] = {}
        for d in comm.allgather({s: self._norm2.pop(s) for s in list(local)}):
            parts.update(d)
        norm = math.sqrt(math.fsum(parts[s] for s in sorted(parts)))
        if not norm > 0 or not math.isfinite(norm):
            err = ConfigError(f"spmv: |A x| is {norm} at step {step}: the iteration cannot be "
                              "normalised. Fix: start from a vector with finite, non-negative "
                              "entries (A's entries are non-negative)")
            err.collective = True  # the norm is summed the same way on every rank
            raise err
        self.eigenvalue = norm / math.sqrt(self._dot(self._x, self._x))
        for s in local:
            local[s] = local[s] / norm
        return shard_map

    def forget(self, sid):
        self._rows.pop(sid, None)

    def summary(self):
        return {"eigenvalue_estimate": self.eigenvalue}


@dataclass(frozen=True)
class _Gather:
    """The ``Allgatherv`` of x for one owner map: per rank its row count and offset.

    ``direct``: every rank's shards (in id order) are one run of rows, so each rank's
    rows go to their own place in x (offsets = the runs' first rows) and x is gathered
    in place; otherwise the ranks' blocks arrive one rank after another and ``places``
    lists, per shard in that order, its offset in the received buffer.

    >>> from hpccloud.workloads.base import rows_map
    >>> m = rows_map(10, None, 4, "<f8", 2, ["public"] * 4)   # rows 0-2, 3-5, 6-7, 8-9
    >>> g = _Gather.of(m, 2)   # shards 0, 1 on rank 0; 2, 3 on rank 1
    >>> g.direct, g.counts.tolist(), g.displs.tolist()
    (True, [6, 4], [0, 6])
    >>> g = _Gather.of(m.with_owners([1, 0, 0, 1]), 2)
    >>> g.direct, g.counts.tolist(), g.displs.tolist(), g.places
    (False, [5, 5], [0, 5], [(1, 0), (2, 3), (0, 5), (3, 8)])
    """

    rows: list          # per shard: its rows of x (its index)
    sizes: list[int]    # per shard: its row count
    counts: np.ndarray  # per rank: its rows in the gather
    displs: np.ndarray  # per rank: where they go (x itself, or the receive buffer)
    direct: bool
    places: list[tuple[int, int]]

    @classmethod
    def of(cls, shard_map, size: int) -> _Gather:
        rows = [sh.index[0] for sh in shard_map.shards]
        sizes = [int(sh.shape[0]) for sh in shard_map.shards]
        owners = shard_map.owners()
        runs = [np.flatnonzero(owners == r) for r in range(size)]
        counts = np.array([sum(sizes[s] for s in ids) for ids in runs], np.int64)
        starts = [r.start if isinstance(r, slice) and r.step in (None, 1) else None for r in rows]
        direct = all(st is not None for st in starts) and all(
            starts[b] == starts[a] + sizes[a] for ids in runs for a, b in zip(ids[:-1], ids[1:], strict=True))
        if direct:
            displs = np.array([starts[ids[0]] if ids.size else 0 for ids in runs], np.int64)
            return cls(rows, sizes, counts, displs, True, [])
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        places, pos = [], 0
        for ids in runs:
            for s in ids:
                places.append((int(s), pos))
                pos += sizes[s]
        return cls(rows, sizes, counts, displs, False, places)
