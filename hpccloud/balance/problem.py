"""The balancing problem as plain numpy arrays, and the adapter from the runtime objects.

Every planner works on a :class:`Problem`: a handful of arrays indexed by shard
(``S``), rank (``P``), data class (``C``), region (``G``) and halo edge (``E``).
Keeping the core on arrays (and links per level, never rank × rank) is what lets one
process plan 10^6 shards on 10^5 ranks in about a second, and lets a unit test build any situation in a
few lines without MPI, a topology file or a shard map.

:func:`problem_from` builds a Problem from the objects the runtime holds
(``ShardMap``, ``LinkModel``, ``SpeedModel``, ``Policy``); it only reads the
attribute names of :mod:`hpccloud.shards`, :mod:`hpccloud.measure` and :mod:`hpccloud.policy`.

>>> import numpy as np
>>> p = Problem.uniform(work_units=np.ones(4), owners=np.array([0, 0, 0, 1]), speed_units_per_s=np.ones(2))
>>> p.n_shards, p.n_ranks, p.n_classes
(4, 2, 1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hpccloud.errors import InvalidArgument, ResidencyError
from hpccloud.measure.levels import LinkTable, node_index


@dataclass(frozen=True, eq=False)
class Problem:
    """Shards, ranks, links and prices of one planning problem (all numpy arrays).

    Attributes
    ----------
    work_units : float64 [S] work of each shard (travels with the shard).
    nbytes : int64 [S] payload size of each shard (what a migration moves).
    owners : int64 [S] the rank that holds each shard now.
    class_id : int64 [S] index into ``class_names`` / ``allowed``.
    allowed : bool [C, P] ``allowed[c, r]``: shards of class ``c`` may live on rank ``r``.
    edge_u, edge_v : int64 [E] halo edges between shards (each undirected edge once).
    edge_bytes : float64 [E] bytes each side sends the other per step over that edge.
    speed_units_per_s : float64 [P] measured (or synthetic) compute speed per rank.
    links : :class:`~hpccloud.measure.levels.LinkTable` Hockney figures per level (region
        pair, node pair, on-node, measured pair) — O(P + nodes + G²), never P × P.
    rank_region : int64 [P] index into ``region_names``.
    region_names : names of the regions.
    price_per_core_hour : float64 [P] price of one busy rank (one core) per hour.
    egress_per_gb : float64 [G, G] price per GB sent from region i to region j (0 on the diagonal).
    class_names : names of the data classes.
    provenance : "measured" or "synthetic" — where speed and link numbers came from.
    """

    work_units: np.ndarray
    nbytes: np.ndarray
    owners: np.ndarray
    class_id: np.ndarray
    allowed: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    edge_bytes: np.ndarray
    speed_units_per_s: np.ndarray
    links: LinkTable
    rank_region: np.ndarray
    region_names: tuple[str, ...]
    price_per_core_hour: np.ndarray
    egress_per_gb: np.ndarray
    class_names: tuple[str, ...]
    provenance: str = "measured"

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ sizes
    @property
    def n_shards(self) -> int:
        return int(self.work_units.shape[0])

    @property
    def n_ranks(self) -> int:
        return int(self.speed_units_per_s.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.allowed.shape[0])

    @property
    def n_regions(self) -> int:
        return len(self.region_names)

    # ------------------------------------------------------------------ derived (cached)
    def link_terms(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(α [s], 1/β [s/byte])`` of each ordered rank pair; 0 for a rank to itself.

        Up to :data:`PAIR_TABLE_MAX_RANKS` ranks the pairs are read from a dense table
        built once per problem (a planner prices dozens of candidates; the lookup by
        measured level was ~20 % of a small plan), above it looked up in the links.
        """
        table = self._pair_table
        if table is None:
            return self.links.terms(src, dst)
        alpha, inv = table
        src = np.ascontiguousarray(src, np.int64)  # at least 1-D, as the lookup's
        dst = np.ascontiguousarray(dst, np.int64)
        return alpha[src, dst], inv[src, dst]

    @cached_property
    def _pair_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        P = self.n_ranks
        if P > PAIR_TABLE_MAX_RANKS:
            return None
        r = np.arange(P, dtype=np.int64)
        return self.links.terms(r[:, None], r[None, :])

    @cached_property
    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """``(group_of_rank [P], allowed_by_group [C, K])``.

        A group is the set of ranks of one region that accept the same data
        classes (with a region-based policy: simply the region). Inside a group
        every shard may go to every rank, so the hierarchy "groups first, then
        ranks" keeps residency by construction.
        """
        keys = np.column_stack([self.rank_region, self.allowed.T.astype(np.int64)])
        uniq, group_of_rank = np.unique(keys, axis=0, return_inverse=True)
        return group_of_rank.reshape(-1).astype(np.int64), uniq[:, 1:].T.astype(bool)

    @cached_property
    def class_rules(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rule_of_class [C], rule_groups bool [M, K])``: the data classes with shards
        merged by the groups they may live in (-1: a class without shards)."""
        _, allowed_by_group = self.groups
        present = np.flatnonzero(self.class_count > 0)
        rule_of_class = np.full(self.n_classes, -1, dtype=np.int64)
        if present.size == 0:
            return rule_of_class, np.zeros((0, allowed_by_group.shape[1]), bool)
        rule_groups, inv = np.unique(allowed_by_group[present], axis=0, return_inverse=True)
        rule_of_class[present] = inv.reshape(-1)
        return rule_of_class, rule_groups

    @cached_property
    def nbytes_f64(self) -> np.ndarray:
        """``nbytes`` as float64: numpy has no BLAS path for int64·float64 dots (100× slower)."""
        return self.nbytes.astype(np.float64)

    @cached_property
    def adjacency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Halo graph in CSR form, both directions: ``(indptr [S+1], neighbour [2E], edge [2E])``.

        The neighbours of shard ``s`` are ``neighbour[indptr[s]:indptr[s+1]]``, joined by
        the halo edges ``edge[...]`` (indices into ``edge_u``/``edge_v``/``edge_bytes``).
        """
        E = self.edge_u.shape[0]
        src = np.concatenate([self.edge_u, self.edge_v])
        order = np.argsort(src, kind="stable")
        nbr = np.concatenate([self.edge_v, self.edge_u])[order]
        edge = np.concatenate([np.arange(E), np.arange(E)])[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=self.n_shards))])
        return indptr.astype(np.int64), nbr.astype(np.int64), edge.astype(np.int64)

    @cached_property
    def class_count(self) -> np.ndarray:
        """Shards per data class, int64 [C]."""
        return np.bincount(self.class_id, minlength=self.n_classes)

    def memo(self, name: str, compute):
        """``compute(self)`` once per problem, kept by :meth:`with_owners` (for owner-free figures).

        The lower bound lives here (``memo("lower_bound_s", bound.lower_bound_s)``)
        without this module importing the bound.
        """
        cache = self.__dict__.setdefault("_memo", {})
        if name not in cache:
            cache[name] = compute(self)
        return cache[name]

    @cached_property
    def class_work_units(self) -> np.ndarray:
        """Total work per data class, float64 [C]."""
        return np.bincount(self.class_id, weights=self.work_units, minlength=self.n_classes)

    # ------------------------------------------------------------------ variants
    def warm(self) -> Problem:
        """Compute the cached rank-level arrays now (the variants made after share them); returns self."""
        _ = self.groups, self.class_rules, self.links.scalar_terms
        return self

    def _keep_cache(self, new: Problem, names: tuple[str, ...]) -> Problem:
        for name in names:
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def with_owners(self, owners: np.ndarray) -> Problem:
        """The same problem with other owners; keeps the rank-level caches (O(S))."""
        new = dataclasses.replace(self, owners=np.asarray(owners, dtype=np.int64))
        return self._keep_cache(new, _RANK_CACHES + _SHARD_CACHES + ("class_work_units", "_memo"))

    def with_work_units(self, work_units: np.ndarray) -> Problem:
        """The same problem with other work units (e.g. re-measured); keeps the rank-level caches."""
        new = dataclasses.replace(self, work_units=np.asarray(work_units, dtype=np.float64))
        return self._keep_cache(new, _RANK_CACHES + _SHARD_CACHES)

    def check_residency(self, owners: np.ndarray) -> None:
        """Raise :class:`ResidencyError` naming the first shard placed where its class may not live."""
        bad = np.flatnonzero(~self.allowed[self.class_id, owners])
        if bad.size:
            s = int(bad[0])
            r = int(owners[s])
            raise ResidencyError(
                f"shard {s} of data class {self.class_names[self.class_id[s]]!r} may not live on "
                f"rank {r} (region {self.region_names[self.rank_region[r]]!r}); "
                f"{bad.size} shard(s) misplaced")

    @classmethod
    def uniform(cls, work_units, owners, speed_units_per_s, *, nbytes=None, alpha_s=1e-6,
                beta_bytes_per_s=1e10, edges=None, provenance="synthetic") -> Problem:
        """A one-region, one-class problem with a uniform network (for tests and examples)."""
        w = np.asarray(work_units, dtype=np.float64)
        v = np.asarray(speed_units_per_s, dtype=np.float64)
        n_ranks = v.shape[0]
        if edges is None:
            u = np.arange(max(w.shape[0] - 1, 0), dtype=np.int64)
            edges = (u, u + 1, np.full(u.shape[0], 8192.0))
        return cls(
            work_units=w,
            nbytes=np.full(w.shape[0], 1 << 20, np.int64) if nbytes is None else np.asarray(nbytes, np.int64),
            owners=np.asarray(owners, dtype=np.int64),
            class_id=np.zeros(w.shape[0], np.int64),
            allowed=np.ones((1, n_ranks), bool),
            edge_u=np.asarray(edges[0], np.int64), edge_v=np.asarray(edges[1], np.int64),
            edge_bytes=np.asarray(edges[2], np.float64),
            speed_units_per_s=v,
            links=LinkTable.uniform(n_ranks, float(alpha_s), float(beta_bytes_per_s), provenance),
            rank_region=np.zeros(n_ranks, np.int64), region_names=("r0",),
            price_per_core_hour=np.full(n_ranks, 0.03), egress_per_gb=np.zeros((1, 1)),
            class_names=("public",), provenance=provenance)


_RANK_CACHES = ("groups", "class_count", "class_rules", "_pair_table")
# a dense P x P table of the link terms up to this many ranks (2 x 8 bytes x P^2: 2 MiB at 362)
PAIR_TABLE_MAX_RANKS = 362
# depend on sizes and halo edges only, never on owners or work units
_SHARD_CACHES = ("nbytes_f64", "adjacency")


def _validate(p: Problem) -> None:
    """Shape and range checks, O(S + E + P + G²); the link table is checked once per table."""
    S = p.work_units.shape[0]
    P = p.speed_units_per_s.shape[0]
    C = p.allowed.shape[0] if p.allowed.ndim == 2 else -1

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InvalidArgument(f"balance Problem: {what}")

    need(p.work_units.ndim == 1, "work_units must be 1-D [S]")
    for name in ("nbytes", "owners", "class_id"):
        need(getattr(p, name).shape == (S,), f"{name} must have shape ({S},), got {getattr(p, name).shape}")
    need(P >= 1, "need at least one rank")
    need(p.allowed.ndim == 2 and p.allowed.shape[1] == P, f"allowed must be [C, {P}], got {p.allowed.shape}")
    need(len(p.class_names) == C, f"class_names has {len(p.class_names)} names for {C} classes")
    need(isinstance(p.links, LinkTable) and p.links.n_ranks == P,
         f"links must be a LinkTable of {P} ranks, got {type(p.links).__name__}")
    need(bool(np.array_equal(p.links.rank_region, p.rank_region)),
         "links.rank_region must equal rank_region (build the table with the same regions)")
    _checked(p.links)
    need(p.rank_region.shape == (P,) and p.price_per_core_hour.shape == (P,),
         "rank_region and price_per_core_hour must be [P]")
    G = len(p.region_names)
    need(p.egress_per_gb.shape == (G, G), f"egress_per_gb must be ({G}, {G})")
    need(p.edge_u.shape == p.edge_v.shape == p.edge_bytes.shape and p.edge_u.ndim == 1,
         "edge_u, edge_v, edge_bytes must be 1-D of equal length")
    if S:
        need(bool(np.all(np.isfinite(p.work_units))) and float(p.work_units.min()) >= 0,
             "work_units must be finite and >= 0")
        need(int(p.owners.min()) >= 0 and int(p.owners.max()) < P, f"owners must be ranks in 0..{P - 1}")
        need(int(p.class_id.min()) >= 0 and int(p.class_id.max()) < C, f"class_id must be in 0..{C - 1}")
    if p.edge_u.shape[0]:
        need(int(min(p.edge_u.min(), p.edge_v.min())) >= 0 and int(max(p.edge_u.max(), p.edge_v.max())) < S,
             "halo edges must name shards in 0..S-1")
    need(bool(np.all(p.speed_units_per_s > 0)) and bool(np.all(np.isfinite(p.speed_units_per_s))),
         "speed_units_per_s must be finite and > 0 on every rank (measure every rank first)")
    if S:
        w_c = np.bincount(p.class_id, weights=np.ones(S), minlength=C)
        homeless = np.flatnonzero((w_c > 0) & ~p.allowed.any(axis=1))
        if homeless.size:
            raise ResidencyError(
                f"data class {p.class_names[int(homeless[0])]!r} may live on none of the {P} ranks; "
                "fix the topology's data_classes or the rank → region map")


def _checked(links: LinkTable) -> None:
    """Run ``links.check()`` once per table (tables are immutable; problems share them)."""
    if not links.__dict__.get("_checked"):
        links.check()
        links.__dict__["_checked"] = True


def topology_arrays(topo) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(region_names, rank_region [P], rank_node [P], price_per_core_hour [P], egress_per_gb [G, G])``.

    The one place a topology becomes planner arrays (used by :func:`problem_from`
    and the profile reader). A node is a (region, host) pair.
    """
    region_names = tuple(topo.region_names)
    rindex = {n: i for i, n in enumerate(region_names)}
    rank_region = np.array([rindex[g] for g in topo.rank_region], dtype=np.int64)
    rank_node = node_index(rank_region, topo.hosts)
    price = np.array([topo.region(g).price_per_core_hour for g in topo.rank_region], dtype=np.float64)
    egress = np.array([[topo.egress_price_per_gb(a, b) for b in region_names] for a in region_names],
                      dtype=np.float64)
    return region_names, rank_region, rank_node, price, egress


def problem_from(shard_map, link_model, speed_model, policy, *, kernel: str | None = None) -> Problem:
    """Build a :class:`Problem` from the runtime objects (ShardMap, LinkModel, SpeedModel, Policy).

    Parameters
    ----------
    shard_map : ``ShardMap`` (``owners()``, ``work_units()``, ``nbytes()``,
        ``data_classes()``, ``halo_edges()``).
    link_model : ``LinkModel`` (``size``, ``table(rank_region, rank_node, n_regions)``, ``provenance``);
        its measured pairs are grouped by the topology's regions and hosts.
    speed_model : ``SpeedModel`` (``rate(kernel)``, ``provenance``).
    policy : ``Policy`` (``topology``, ``allowed_mask``).
    kernel : which kernel's measured speed to use (default: the reference kernel).
    """
    topo = policy.topology
    P = topo.size
    for what, size in (("link model", link_model.size), ("speed model", speed_model.size)):
        if size != P:
            raise InvalidArgument(f"the {what} covers {size} ranks but the topology has {P}; "
                                  "measure the same job the plan is for")
    classes_per_shard = list(shard_map.data_classes())
    class_names = tuple(dict.fromkeys(classes_per_shard)) or ("public",)
    index = {n: i for i, n in enumerate(class_names)}
    class_id = np.fromiter((index[c] for c in classes_per_shard), dtype=np.int64,
                           count=len(classes_per_shard))
    allowed = np.asarray(policy.allowed_mask(list(class_names)), dtype=bool)  # [C, P]
    region_names, rank_region, rank_node, price, egress = topology_arrays(topo)
    u, v, halo_bytes = shard_map.halo_edges()
    provenance = "measured"
    if "synthetic" in (link_model.provenance, speed_model.provenance):
        provenance = "synthetic"
    return Problem(
        work_units=np.asarray(shard_map.work_units(), dtype=np.float64),
        nbytes=np.asarray(shard_map.nbytes(), dtype=np.int64),
        owners=np.asarray(shard_map.owners(), dtype=np.int64),
        class_id=class_id,
        allowed=allowed,
        edge_u=np.asarray(u, dtype=np.int64), edge_v=np.asarray(v, dtype=np.int64),
        edge_bytes=np.asarray(halo_bytes, dtype=np.float64),
        speed_units_per_s=np.asarray(speed_model.rate(kernel), dtype=np.float64),
        links=link_model.table(rank_region, rank_node, len(region_names)),
        rank_region=rank_region, region_names=region_names,
        price_per_core_hour=price, egress_per_gb=egress,
        class_names=class_names, provenance=provenance)
