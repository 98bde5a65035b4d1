"""``kmeans``: Lloyd iterations over sharded points; centroids replicated.

Points are row blocks of an ``(n, d)`` array. Each step every shard assigns its
points to the nearest centroid and returns partial sums and counts; the
partials of all shards are combined **in shard-id order** on every rank, so
the centroids are bit-for-bit the same whatever the rank count.

Residency: only the partial sums and counts (aggregates) leave a rank, and
only for data classes whose ``aggregates_may_leave`` is true. A job over several
regions with any other class is refused before any data exists
(:meth:`KMeans.refuse_residency`, exit 2 on every rank); the step keeps its own
check and raises :class:`~hpccloud.errors.ResidencyError` before anything is sent.
"""

from __future__ import annotations

import numpy as np

from hpccloud.errors import ConfigError, ResidencyError
from hpccloud.workloads.base import Workload, class_by_fraction, rows_map


class KMeans(Workload):
    name = "kmeans"
    kernel = "kmeans"
    spinning_collectives = True  # its end_step gathers (MPI blocking)
    defaults = {
        "n": 400_000,        # points
        "d": 4,              # features
        "k": 8,              # clusters
        "shards": 32,
        "eu_fraction": 0.25,
    }
    limits = {"n": (1, None), "d": (1, 4096), "k": (1, 1 << 16), "shards": (1, None),
              "eu_fraction": (0.0, 1.0)}

    def check_params(self):
        p = self.params
        self.need(p["k"] <= p["n"], f"k={p['k']} clusters for n={p['n']} points", "use k <= n")
        self.need(p["shards"] <= p["n"], f"shards={p['shards']} for n={p['n']} points",
                  "use shards <= n")

    def data_bytes(self):
        return self.params["n"] * self.params["d"] * 8

    def result_bytes(self):
        return self.params["n"] * 8

    def probe_inputs(self):
        # a point costs k·d multiply-adds: the probe's points must have this run's k and d
        # (the kernel's own 8 and 4 made a point 1/32 of one at k=64, d=16)
        return {"k": int(self.params["k"]), "d": int(self.params["d"])}

    def __init__(self, params=None, seed=0):
        super().__init__(params, seed)
        import kernels

        self._kernel = kernels.get(self.kernel).kernel
        p = self.params
        g = np.random.default_rng([self.seed, 7])
        self._centres = g.uniform(-5, 5, size=(p["k"], p["d"]))
        self.centroids = self._centres + g.normal(0, 1.0, size=(p["k"], p["d"]))
        self._partials: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.policy = None  # set by the runner: aggregates' residency is checked with it
        self.inertia_shift = float("nan")

    def shard_map(self, size):
        p = self.params
        return rows_map(p["n"], p["d"], p["shards"], "<f8", size,
                        class_by_fraction(p["shards"], p["eu_fraction"]))

    def refuse_residency(self, shard_map, policy):
        # every rank's partials go to every rank: on a job over several regions the
        # aggregates of every class in the map leave its region at the first step
        regions = sorted(set(policy.topology.rank_region))
        if len(regions) < 2:
            return
        kept = sorted(c for c in set(shard_map.data_classes())
                      if c in policy.topology.data_classes and not policy.aggregates_may_leave(c))
        if kept:
            raise ConfigError(
                f"{policy.topology.source}: kmeans combines the partial sums of every shard on "
                f"every rank, so aggregates of data class {', '.join(map(repr, kept))} would "
                f"leave their region (this job spans {regions}), and the topology says they "
                f"may not. Fix: set aggregates_may_leave = true for "
                f"{'that class' if len(kept) == 1 else 'those classes'}, run the job inside "
                "one region" + (", or use --param eu_fraction=0 to leave that data out"
                                if "public" not in kept else ""))

    def initial(self, shard):
        p = self.params
        g = np.random.default_rng([self.seed, 11, shard.id])
        rows = shard.shape[0]
        which = g.integers(0, p["k"], size=rows)
        return np.ascontiguousarray(self._centres[which] + g.standard_normal((rows, p["d"])))

    def compute(self, shard, arr, step):
        labels, sums, counts = self._kernel(arr, self.centroids)
        self._partials[shard.id] = (sums, counts)
        return arr, float(arr.shape[0])

    def end_step(self, comm, shard_map, local, step):
        mine = {sid: self._partials.pop(sid) for sid in list(local)}
        if self.policy is not None and comm.Get_size() > 1:
            topo = self.policy.topology
            spans_regions = len(set(topo.rank_region)) > 1
            for sid in mine:
                dc = shard_map.shards[sid].data_class
                if spans_regions and not self.policy.aggregates_may_leave(dc):
                    raise ResidencyError(
                        f"kmeans: partial sums of shard {sid} (data class {dc!r}) would leave "
                        f"region {topo.region_of(comm.Get_rank())!r}, and the topology says "
                        f"aggregates of {dc!r} may not. Fix: set aggregates_may_leave = true "
                        "for the class, or keep the job inside one region")
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for d in comm.allgather(mine):
            parts.update(d)
        k, dim = self.centroids.shape
        sums = np.zeros((k, dim))
        counts = np.zeros(k, dtype=np.int64)
        for sid in sorted(parts):  # shard-id order: the same sum on every rank count
            s, c = parts[sid]
            sums += s
            counts += c
        new = self.centroids.copy()
        nonempty = counts > 0
        new[nonempty] = sums[nonempty] / counts[nonempty, None]
        self.inertia_shift = float(np.abs(new - self.centroids).max())
        self.centroids = new
        return shard_map

    result_long_name = "cluster index of each point"

    def result_map(self, shard_map):
        p = self.params
        m = rows_map(p["n"], None, p["shards"], "<i8", 1, shard_map.data_classes())
        return m.with_owners(shard_map.owners())

    def result(self, shard, arr):
        # the assignment to the final centroids: the same wherever the shard ended up
        return np.ascontiguousarray(self._kernel(arr, self.centroids)[0], dtype=np.int64)

    def state(self):
        return {"centroids": self.centroids.tolist()}

    def load_state(self, state):
        self.centroids = np.array(state["centroids"], dtype=np.float64)

    def summary(self):
        return {"centroids": self.centroids.tolist(), "last_centroid_shift": self.inertia_shift}
