"""``particles``: particles in a cellular flow, repelling at short range, clustering over time.

The unit square is cut into ``grid × grid`` tiles; a tile's stored array holds
its particles as rows ``(x, y, vx, vy)``. Each step the ``particles`` kernel
advances a tile and reports the particles that left it; those travel to the
tile that now contains them — on the same rank by a copy, between ranks as
MPI buffers (``Alltoallv``). Arrivals are appended in (source tile, source row)
order, so a tile's particle order — and with it the result — is the same on
any rank count. The particles drift towards the flow's cell edges and cluster,
so a tile's cost (neighbours within the cut-off) changes from step to step.

The shard map's shapes change every step (particle counts per tile); the
runner's map is replaced with the new one (same version: nothing migrated).
Particles cross tile borders, so every tile must have the same data class.

The result is a ``bins × bins`` density histogram per tile.
"""

from __future__ import annotations

import numpy as np

from hpccloud.errors import ConfigError
from hpccloud.shards import tile_2d
from hpccloud.workloads.base import Workload

_COLS = 4  # x, y, vx, vy


class Particles(Workload):
    name = "particles"
    kernel = "particles"
    spinning_collectives = True  # its end_step gathers (MPI blocking)
    helper_kernels = ("particles_route",)
    fixed_shapes = False  # particle counts per tile change every step
    defaults = {
        "n": 100_000,      # particles
        "grid": 6,         # tiles per side
        "dt": 2e-3,
        "strength": 0.5,   # repulsion
        "drag": 2.0,       # pull towards the background flow
        "bins": 16,        # histogram bins per tile side (result)
    }
    limits = {"n": (1, None), "grid": (1, 1024), "dt": (1e-12, 1.0), "strength": (0.0, 1e6),
              "drag": (0.0, 1e6), "bins": (1, 4096)}

    def data_bytes(self):
        return self.params["n"] * _COLS * 8

    def result_bytes(self):
        return (self.params["grid"] * self.params["bins"]) ** 2 * 8

    def replicated_bytes(self):
        return 3 * self.params["n"] * _COLS * 8  # every rank draws all particles, then keeps its tiles'

    def __init__(self, params=None, seed=0):
        super().__init__(params, seed)
        import kernels

        self._kernel = kernels.get(self.kernel).kernel
        self._route = kernels.get("particles_route").kernel
        p = self.params
        self.cutoff = float(min(0.05, np.sqrt(8.0 / (np.pi * p["n"]))))
        self._leaving: dict[int, np.ndarray] = {}
        self._all: np.ndarray | None = None

    def shard_map(self, size):
        g = self.params["grid"]
        # the global "array" is the tile grid itself: one row per particle is not a fixed shape
        m = tile_2d((g, g), (g, g), "<f8", size, data_class="public", halo_width=0)
        counts = [self._initial_particles(s).shape[0] for s in m.shards]
        # a tile's work is its particles (the kernel's units, and the speed probe's): the
        # initial placement plans on it (1 per tile, the grid cell's, was ~1/3,000 of that:
        # topo priced compute in microseconds against its per-shard and link terms)
        return (m.with_shapes({s.id: (c, _COLS) for s, c in zip(m.shards, counts, strict=True)})
                .with_work_units(counts))

    def bounds(self, sid: int) -> tuple[float, float, float, float]:
        g = self.params["grid"]
        i, j = divmod(sid, g)
        return (j / g, (j + 1) / g, i / g, (i + 1) / g)

    def _everything(self) -> np.ndarray:
        if self._all is None:
            n = self.params["n"]
            rng = np.random.default_rng([self.seed, 13])
            pos = rng.uniform(0.0, 1.0, size=(n, 2))
            vel = rng.normal(0.0, 0.05, size=(n, 2))
            self._all = np.column_stack([pos, vel])
        return self._all

    def _tile_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = self.params["grid"]
        i = np.clip((y * g).astype(np.int64), 0, g - 1)
        j = np.clip((x * g).astype(np.int64), 0, g - 1)
        return i * g + j

    def _initial_particles(self, shard) -> np.ndarray:
        a = self._everything()
        keep = self._tile_of(a[:, 0], a[:, 1]) == shard.id
        return np.ascontiguousarray(a[keep])

    def initial(self, shard):
        return self._initial_particles(shard)

    def refuse_residency(self, shard_map, policy):
        if len(set(shard_map.data_classes())) > 1:
            raise ConfigError("particles: particles cross tile borders, so all tiles must share "
                              "one data class. Fix: give the workload a single data class")

    def begin_step(self, comm, shard_map, local, step):
        self.refuse_residency(shard_map, None)  # refused before any data; kept here too

    def compute(self, shard, arr, step):
        p = self.params
        x, y, vx, vy = (np.ascontiguousarray(arr[:, c]) for c in range(_COLS))
        x, y, vx, vy, _ = self._kernel(x, y, vx, vy, self.bounds(shard.id), p["dt"],
                                       self.cutoff, p["strength"], p["drag"])
        # the walls reflect; the rows split by the tile they are in now, in one compiled pass
        # (the numpy of kernels.particles.route_reference cost as much as the kernel)
        stay, self._leaving[shard.id] = self._route(x, y, vx, vy, shard.id, p["grid"])
        return stay, float(arr.shape[0])

    def end_step(self, comm, shard_map, local, step):
        from mpi4py import MPI

        size = comm.Get_size()
        owners = shard_map.owners()
        width = 3 + _COLS
        leaving = [self._leaving.pop(s) for s in sorted(local)]
        out = np.concatenate(leaving) if leaving else np.empty((0, width))
        dest_rank = owners[out[:, 0].astype(np.int64)] if out.size else np.empty(0, np.int64)
        order = np.argsort(dest_rank, kind="stable")
        send = np.ascontiguousarray(out[order])
        send_counts = np.bincount(dest_rank, minlength=size).astype(np.int64) * width
        recv_counts = np.empty(size, np.int64)
        comm.Alltoall(send_counts, recv_counts)
        sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
        recv = np.empty(int(recv_counts.sum()))
        comm.Alltoallv([send, (send_counts, sdispl), MPI.DOUBLE],
                       [recv, (recv_counts, rdispl), MPI.DOUBLE])
        arrivals = recv.reshape(-1, width)
        # canonical order: by (source tile, source row), whatever rank sent them
        arrivals = arrivals[np.lexsort((arrivals[:, 2], arrivals[:, 1]))]
        for sid in sorted(local):
            mine = arrivals[arrivals[:, 0] == sid, 3:]
            if mine.size:
                local[sid] = np.ascontiguousarray(np.concatenate([local[sid], mine]))
        counts = {}
        for part in comm.allgather({sid: local[sid].shape[0] for sid in local}):
            counts.update(part)
        return shard_map.with_shapes({sid: (c, _COLS) for sid, c in counts.items()})

    result_long_name = "particles per bin"
    result_units = "1"

    def result_axes(self, shape, steps):
        from hpccloud.io.provenance import Axis

        # bin centres on the unit box
        return [Axis(name, (np.arange(n) + 0.5) / n, "1", f"{name} position (bin centre)")
                for name, n in zip(("y", "x"), shape, strict=True)]

    def result_map(self, shard_map):
        b = self.params["bins"]
        g = self.params["grid"]
        return tile_2d((g * b, g * b), (g, g), "<f8", 1, halo_width=0).with_owners(shard_map.owners())

    def result(self, shard, arr):
        b = self.params["bins"]
        x0, x1, y0, y1 = self.bounds(shard.id)
        hist, _, _ = np.histogram2d(arr[:, 1], arr[:, 0], bins=b, range=[[y0, y1], [x0, x1]])
        return hist
