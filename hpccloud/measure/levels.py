"""Link figures per level — region pair, node pair, on-node, measured rank pair — never P × P.

A :class:`LinkTable` answers "what does a message from rank ``i`` to rank ``j``
cost?" (Hockney ``α + n/β``) from figures kept per *level* of the machine:

==============  ==========================================  ====================
level           figure                                      memory
==============  ==========================================  ====================
rank pair       a pair that was itself measured              O(measured pairs)
on-node         two ranks of one node                        O(nodes)
node pair       two nodes of one region, where measured      O(measured node pairs)
region pair     nodes in regions ``a`` → ``b`` (``a == b``:  O(regions²)
                two nodes of one region)
==============  ==========================================  ====================

A lookup takes the most specific figure that exists, in the order of the
table: a measured rank pair, else on-node (same node), else a measured node
pair (same region), else the region pair. Ranks map to nodes and nodes to
regions by two O(P) arrays; a node never spans two regions (a host split
between regions, as on one test machine, is two nodes).

:meth:`LinkTable.from_pairs` builds the table from measured pairs: each level
figure is the median, α and β separately, over the measured pairs of that
level (the old model's region aggregation), and the pairs keep their own fit.
So a table built from a full P × P measurement gives every pair exactly its
measured figure — the dense model's answers — and one built from a sample
gives the unmeasured pairs their level's median.

>>> import numpy as np
>>> t = LinkTable.levels(rank_region=[0, 0, 0, 1], rank_node=[0, 0, 1, 2],
...                      region_alpha_s=[[3e-6, 1e-3], [1e-3, 3e-6]],
...                      region_beta_bytes_per_s=[[5e9, 1e9], [1e9, 5e9]],
...                      node_alpha_s=[1e-6, 1e-6, 1e-6], node_beta_bytes_per_s=[1e10, 1e10, 1e10])
>>> (t.time_s([0, 0, 0, 0], [0, 1, 2, 3], 0.0) * 1e6).round(3).tolist()
[0.0, 1.0, 3.0, 1000.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

from hpccloud.errors import InvalidArgument

#: level codes returned by :meth:`LinkTable.level_of`
SAME_RANK, ON_NODE, IN_REGION, BETWEEN_REGIONS = 0, 1, 2, 3
LEVEL_NAMES = ("same-rank", "on-node", "node-to-node", "region-to-region")
#: the dense (P, P) view is refused above this many ranks (it would be 8 P² bytes per matrix)
DENSE_VIEW_MAX_RANKS = 4096


@dataclass(frozen=True, eq=False)
class SparsePairs:
    """Figures of some ordered pairs, keyed ``a * n + b`` (sorted, unique)."""

    n: int
    key: np.ndarray
    alpha_s: np.ndarray
    beta_bytes_per_s: np.ndarray

    @classmethod
    def empty(cls, n: int) -> SparsePairs:
        return cls(n, np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    @classmethod
    def build(cls, n: int, a, b, alpha_s, beta_bytes_per_s) -> SparsePairs:
        key = np.asarray(a, np.int64) * n + np.asarray(b, np.int64)
        order = np.argsort(key, kind="stable")
        key = key[order]
        if key.size and np.any(key[1:] == key[:-1]):
            raise InvalidArgument("link table: a pair is listed twice")
        return cls(n, key, np.asarray(alpha_s, np.float64)[order], np.asarray(beta_bytes_per_s, np.float64)[order])

    @property
    def size(self) -> int:
        return int(self.key.size)

    def find(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(where, index)``: which queries are listed, and their rows."""
        if self.key.size == 0:
            return np.zeros(a.shape, bool), np.zeros(a.shape, np.int64)
        q = a.astype(np.int64) * self.n + b
        idx = np.minimum(np.searchsorted(self.key, q), self.key.size - 1)
        return self.key[idx] == q, idx


@dataclass(frozen=True, eq=False)
class LinkTable:
    """Hockney α (s) and β (bytes/s) per level; see the module notes.

    Attributes
    ----------
    rank_region : int64 [P] region index of each rank.
    rank_node : int64 [P] node index of each rank (a node lies in one region).
    region_alpha_s, region_beta_bytes_per_s : float64 [G, G] between nodes of
        regions ``a`` → ``b``; NaN where nothing was measured.
    node_alpha_s, node_beta_bytes_per_s : float64 [N] between two ranks of one node.
    node_pairs : measured node pairs inside a region (keys ``a * N + b``).
    rank_pairs : measured rank pairs (keys ``i * P + j``).
    provenance : ``"measured"`` or ``"synthetic"``.
    """

    rank_region: np.ndarray
    rank_node: np.ndarray
    region_alpha_s: np.ndarray
    region_beta_bytes_per_s: np.ndarray
    node_alpha_s: np.ndarray
    node_beta_bytes_per_s: np.ndarray
    node_pairs: SparsePairs
    rank_pairs: SparsePairs
    provenance: str = "measured"

    def __post_init__(self) -> None:
        P, G, N = self.n_ranks, self.n_regions, self.n_nodes
        if self.rank_node.shape != (P,) or (P and (self.rank_node.min() < 0 or self.rank_region.min() < 0)):
            raise InvalidArgument(f"link table: rank_node must be [{P}] non-negative node indices")
        if self.region_beta_bytes_per_s.shape != (G, G) or self.node_beta_bytes_per_s.shape != (N,):
            raise InvalidArgument("link table: region figures must be [G, G] and node figures [N]")
        if P and int(self.rank_region.max()) >= G:
            raise InvalidArgument(f"link table: rank_region names region {int(self.rank_region.max())} "
                                  f"but only {G} have figures")
        # a node in one region only
        region_of_node = np.full(N, -1, np.int64)
        region_of_node[self.rank_node] = self.rank_region
        if np.any(region_of_node[self.rank_node] != self.rank_region):
            raise InvalidArgument("link table: a node holds ranks of two regions; split it into one "
                                  "node per region")

    # ------------------------------------------------------------------ sizes
    @property
    def n_ranks(self) -> int:
        return int(self.rank_region.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.region_alpha_s.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.node_alpha_s.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the table's arrays (bytes)."""
        arrays = (self.rank_region, self.rank_node, self.region_alpha_s, self.region_beta_bytes_per_s,
                  self.node_alpha_s, self.node_beta_bytes_per_s)
        sparse = sum(x.key.nbytes + x.alpha_s.nbytes + x.beta_bytes_per_s.nbytes
                     for x in (self.node_pairs, self.rank_pairs))
        return int(sum(a.nbytes for a in arrays) + sparse)

    # ------------------------------------------------------------------ lookups
    def level_of(self, src, dst) -> np.ndarray:
        """Level code of each ordered pair (``SAME_RANK`` … ``BETWEEN_REGIONS``), int8."""
        src = np.asarray(src, np.int64)
        dst = np.asarray(dst, np.int64)
        level = np.where(self.rank_region[src] != self.rank_region[dst], BETWEEN_REGIONS, IN_REGION)
        level[self.rank_node[src] == self.rank_node[dst]] = ON_NODE
        level[src == dst] = SAME_RANK
        return level.astype(np.int8)

    def terms(self, src, dst) -> tuple[np.ndarray, np.ndarray]:
        """``(α [s], 1/β [s/byte])`` of each ordered pair ``src[k] → dst[k]``; 0 for ``src == dst``.

        Vectorised; O(n log m) for n queries and m measured pairs.
        """
        src = np.ascontiguousarray(src, np.int64)
        dst = np.ascontiguousarray(dst, np.int64)
        shape = np.broadcast_shapes(src.shape, dst.shape)
        # copies: a broadcast view is read-only even when contiguous, and a read-only
        # array is another signature for the compiled lookup (compiled again at run time)
        src, dst = (np.array(np.broadcast_to(x, shape), np.int64).ravel() for x in (src, dst))
        np_, rp = self.node_pairs, self.rank_pairs
        alpha, inv = _lookup(src, dst, self.rank_region, self.rank_node, self._region_alpha,
                             self._region_inv_beta, self._node_alpha, self._node_inv_beta,
                             np_.key, np_.alpha_s, self._node_pair_inv_beta, np_.n,
                             rp.key, rp.alpha_s, self._rank_pair_inv_beta, rp.n)
        return alpha.reshape(shape), inv.reshape(shape)

    def time_s(self, src, dst, nbytes) -> np.ndarray:
        """Predicted seconds ``α + n/β`` of each message (0 on one rank)."""
        alpha, inv = self.terms(src, dst)
        return alpha + np.asarray(nbytes, np.float64) * inv

    @cached_property
    def scalar_terms(self):
        """A plain-Python ``f(i, j) -> (α, 1/β)`` for loops that price one pair at a time."""
        region = self.rank_region.tolist()
        node = self.rank_node.tolist()
        ra = self._region_alpha.tolist()
        ri = self._region_inv_beta.tolist()
        na = self._node_alpha.tolist()
        ni = self._node_inv_beta.tolist()
        N, P = self.n_nodes, self.n_ranks
        npair = dict(zip(self.node_pairs.key.tolist(),
                         zip(self.node_pairs.alpha_s.tolist(), (1.0 / self.node_pairs.beta_bytes_per_s).tolist(),
                             strict=True), strict=True))
        rpair = dict(zip(self.rank_pairs.key.tolist(),
                         zip(self.rank_pairs.alpha_s.tolist(), (1.0 / self.rank_pairs.beta_bytes_per_s).tolist(),
                             strict=True), strict=True))

        def f(i: int, j: int) -> tuple[float, float]:
            if i == j:
                return 0.0, 0.0
            if rpair:
                hit = rpair.get(i * P + j)
                if hit is not None:
                    return hit
            a, b = node[i], node[j]
            if a == b:
                return na[a], ni[a]
            if npair:
                hit = npair.get(a * N + b)
                if hit is not None:
                    return hit
            g, h = region[i], region[j]
            return ra[g][h], ri[g][h]

        return f

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise :class:`InvalidArgument` if a pair of ranks has no usable figure (O(N + G²))."""
        P, G = self.n_ranks, self.n_regions
        ranks_per_node = np.bincount(self.rank_node, minlength=self.n_nodes)
        nodes_per_region = np.bincount(self.rank_region[_first_rank_of_node(self.rank_node)],
                                       minlength=G) if P else np.zeros(G, np.int64)
        has_ranks = np.bincount(self.rank_region, minlength=G) > 0
        need = has_ranks[:, None] & has_ranks[None, :]
        need[np.diag_indices(G)] = nodes_per_region >= 2
        for what, a, inv in (("region pair", self.region_alpha_s[need], self._region_inv_beta[need]),
                             ("node", self.node_alpha_s[ranks_per_node >= 2],
                              self._node_inv_beta[ranks_per_node >= 2])):
            bad = ~(np.isfinite(a) & (a >= 0) & np.isfinite(inv) & (inv >= 0))
            if bad.any():
                where = np.argwhere(need)[np.flatnonzero(bad)[0]] if what == "region pair" else \
                    np.flatnonzero(ranks_per_node >= 2)[np.flatnonzero(bad)[0]]
                raise InvalidArgument(f"link table: no usable α/β for {what} {where.tolist()} "
                                      "(no link of that level was measured; probe every level)")
        for sp in (self.node_pairs, self.rank_pairs):
            ok = np.isfinite(sp.alpha_s) & (sp.alpha_s >= 0) & np.isfinite(sp.beta_bytes_per_s) & \
                (sp.beta_bytes_per_s > 0)
            if not ok.all():
                k = int(sp.key[np.flatnonzero(~ok)[0]])
                raise InvalidArgument(f"link table: pair {divmod(k, sp.n)} has α={sp.alpha_s[~ok][0]!r}, "
                                      f"β={sp.beta_bytes_per_s[~ok][0]!r}; α must be >= 0 and β > 0")

    # ------------------------------------------------------------------ views
    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """``(α, β)`` as (P, P) matrices with a NaN diagonal — for small P only (reports, tests)."""
        P = self.n_ranks
        if P > DENSE_VIEW_MAX_RANKS:
            raise InvalidArgument(f"a dense {P} × {P} link matrix would take {16 * P * P / 2**30:.1f} GiB; "
                                  "use the level figures (LinkTable.terms) instead")
        i, j = np.divmod(np.arange(P * P, dtype=np.int64), max(P, 1))
        alpha, inv = self.terms(i, j)
        with np.errstate(divide="ignore"):
            beta = 1.0 / inv
        alpha, beta = alpha.reshape(P, P), beta.reshape(P, P)
        np.fill_diagonal(alpha, np.nan)
        np.fill_diagonal(beta, np.nan)
        return alpha, beta

    def with_groups(self, rank_region, rank_node, n_regions: int | None = None) -> LinkTable:
        """The same measured pairs regrouped into other regions/nodes (levels recomputed).

        Only the rank-pair figures carry over: call it on a table built by
        :meth:`from_pairs` (whose pairs are the measurements).
        """
        i, j = np.divmod(self.rank_pairs.key, max(self.n_ranks, 1))
        return LinkTable.from_pairs(i, j, self.rank_pairs.alpha_s, self.rank_pairs.beta_bytes_per_s,
                                    rank_region=rank_region, rank_node=rank_node, n_regions=n_regions,
                                    provenance=self.provenance)

    # ------------------------------------------------------------------ cached inverses
    @cached_property
    def _region_alpha(self) -> np.ndarray:
        return np.asarray(self.region_alpha_s, np.float64)

    @cached_property
    def _region_inv_beta(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / np.asarray(self.region_beta_bytes_per_s, np.float64)

    @cached_property
    def _node_alpha(self) -> np.ndarray:
        return np.asarray(self.node_alpha_s, np.float64)

    @cached_property
    def _node_pair_inv_beta(self) -> np.ndarray:
        return 1.0 / self.node_pairs.beta_bytes_per_s

    @cached_property
    def _rank_pair_inv_beta(self) -> np.ndarray:
        return 1.0 / self.rank_pairs.beta_bytes_per_s

    @cached_property
    def _node_inv_beta(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / np.asarray(self.node_beta_bytes_per_s, np.float64)

    # ------------------------------------------------------------------ builders
    @classmethod
    def levels(cls, *, rank_region, rank_node, region_alpha_s, region_beta_bytes_per_s, node_alpha_s,
               node_beta_bytes_per_s, provenance: str = "synthetic") -> LinkTable:
        """A table from level figures alone (no pair overrides): the simulator's machines."""
        rank_node = np.asarray(rank_node, np.int64)
        return cls(np.asarray(rank_region, np.int64), rank_node,
                   np.asarray(region_alpha_s, np.float64), np.asarray(region_beta_bytes_per_s, np.float64),
                   np.asarray(node_alpha_s, np.float64), np.asarray(node_beta_bytes_per_s, np.float64),
                   SparsePairs.empty(len(node_alpha_s)), SparsePairs.empty(rank_node.size), provenance)

    @classmethod
    def uniform(cls, n_ranks: int, alpha_s: float, beta_bytes_per_s: float,
                provenance: str = "synthetic") -> LinkTable:
        """Every pair of ``n_ranks`` ranks costs ``α + n/β`` (one region, one rank per node)."""
        P = int(n_ranks)
        return cls.levels(rank_region=np.zeros(P, np.int64), rank_node=np.arange(P),
                          region_alpha_s=[[alpha_s]], region_beta_bytes_per_s=[[beta_bytes_per_s]],
                          node_alpha_s=np.full(P, float(alpha_s)),
                          node_beta_bytes_per_s=np.full(P, float(beta_bytes_per_s)), provenance=provenance)

    @classmethod
    def from_pairs(cls, src, dst, alpha_s, beta_bytes_per_s, *, rank_region, rank_node,
                   n_regions: int | None = None, provenance: str = "measured") -> LinkTable:
        """A table from measured pairs: level figures are medians over each level's pairs.

        Pairs with a non-finite α or β, or ``src == dst``, are left out.
        """
        rank_region = np.asarray(rank_region, np.int64)
        rank_node = _dense_labels(np.asarray(rank_node, np.int64), rank_region)
        P = rank_region.size
        G = int(n_regions if n_regions is not None else (rank_region.max() + 1 if P else 1))
        N = int(rank_node.max() + 1) if P else 0
        src = np.asarray(src, np.int64)
        dst = np.asarray(dst, np.int64)
        alpha = np.asarray(alpha_s, np.float64)
        beta = np.asarray(beta_bytes_per_s, np.float64)
        keep = (src != dst) & np.isfinite(alpha) & np.isfinite(beta)
        src, dst, alpha, beta = src[keep], dst[keep], alpha[keep], beta[keep]
        na, nb = rank_node[src], rank_node[dst]
        ga, gb = rank_region[src], rank_region[dst]
        on_node = na == nb
        node_a = group_median(na[on_node], alpha[on_node], N)
        node_b = group_median(na[on_node], beta[on_node], N)
        between = ~on_node
        region_a = group_median(ga[between] * G + gb[between], alpha[between], G * G).reshape(G, G)
        region_b = group_median(ga[between] * G + gb[between], beta[between], G * G).reshape(G, G)
        inreg = between & (ga == gb)
        nkey = na[inreg] * N + nb[inreg]
        uniq, inv = np.unique(nkey, return_inverse=True)
        np_a = group_median(inv, alpha[inreg], uniq.size)
        np_b = group_median(inv, beta[inreg], uniq.size)
        return cls(rank_region, rank_node, region_a, region_b, node_a, node_b,
                   SparsePairs(N, uniq.astype(np.int64), np_a, np_b),
                   SparsePairs.build(P, src, dst, alpha, beta), provenance)

    @classmethod
    def from_dense(cls, alpha_s, beta_bytes_per_s, *, rank_region=None, rank_node=None,
                   n_regions: int | None = None, provenance: str = "measured") -> LinkTable:
        """A table from (P, P) matrices (old profiles, tests): every finite pair is kept as measured.

        Without ``rank_node`` every rank is its own node; without ``rank_region``
        all ranks are in region 0.
        """
        alpha = np.asarray(alpha_s, np.float64)
        beta = np.asarray(beta_bytes_per_s, np.float64)
        P = alpha.shape[0]
        i, j = np.divmod(np.arange(P * P, dtype=np.int64), max(P, 1))
        region = np.zeros(P, np.int64) if rank_region is None else np.asarray(rank_region, np.int64)
        node = np.arange(P) if rank_node is None else np.asarray(rank_node, np.int64)
        return cls.from_pairs(i, j, alpha.ravel(), beta.ravel(), rank_region=region, rank_node=node,
                              n_regions=n_regions, provenance=provenance)


@njit(cache=True, nogil=True)
def _find(keys, q):  # pragma: no cover - compiled
    # index of q in the sorted keys, or -1
    lo, hi = 0, keys.size
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid] < q:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < keys.size and keys[lo] == q else -1


@njit(cache=True, nogil=True)
def _lookup(src, dst, rank_region, rank_node, region_alpha, region_inv, node_alpha, node_inv,
            np_key, np_alpha, np_inv, n_nodes, rp_key, rp_alpha, rp_inv, n_ranks):  # pragma: no cover
    # the table's order in one pass per pair: measured rank pair, on-node, measured node pair,
    # region pair (10^6 lookups in ~10 ms; the numpy version made ten passes)
    alpha = np.empty(src.size)
    inv = np.empty(src.size)
    for k in range(src.size):
        i = src[k]
        j = dst[k]
        if i == j:
            alpha[k] = 0.0
            inv[k] = 0.0
            continue
        if rp_key.size:
            h = _find(rp_key, i * n_ranks + j)
            if h >= 0:
                alpha[k] = rp_alpha[h]
                inv[k] = rp_inv[h]
                continue
        a = rank_node[i]
        b = rank_node[j]
        if a == b:
            alpha[k] = node_alpha[a]
            inv[k] = node_inv[a]
            continue
        if np_key.size:
            h = _find(np_key, a * n_nodes + b)
            if h >= 0:
                alpha[k] = np_alpha[h]
                inv[k] = np_inv[h]
                continue
        alpha[k] = region_alpha[rank_region[i], rank_region[j]]
        inv[k] = region_inv[rank_region[i], rank_region[j]]
    return alpha, inv


def node_index(rank_region, host_of_rank) -> np.ndarray:
    """Node index of each rank: one node per (region, host), numbered in order of first rank.

    >>> node_index([0, 0, 1, 1], ["h", "h", "h", "h"]).tolist()
    [0, 0, 1, 1]
    """
    keys = list(zip(np.asarray(rank_region).tolist(), list(host_of_rank), strict=True))
    index: dict = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def level_counts(rank_region, rank_node, n_regions: int | None = None) -> dict[str, int]:
    """How many ordered rank pairs each level holds (O(P + G²), no pair enumerated)."""
    rank_region = np.asarray(rank_region, np.int64)
    rank_node = np.asarray(rank_node, np.int64)
    P = rank_region.size
    G = int(n_regions if n_regions is not None else (rank_region.max() + 1 if P else 0))
    per_node = np.bincount(rank_node).astype(np.float64)
    per_region = np.bincount(rank_region, minlength=G).astype(np.float64)
    on_node = float((per_node * (per_node - 1)).sum())
    in_region = float((per_region ** 2).sum() - (per_node ** 2).sum())
    between = float(P) ** 2 - float((per_region ** 2).sum())
    return {"on-node": int(on_node), "node-to-node": int(in_region), "region-to-region": int(between)}


def _dense_labels(labels: np.ndarray, rank_region: np.ndarray) -> np.ndarray:
    """Relabel nodes 0..N-1 in order of first rank; a node split by regions becomes two."""
    if labels.size == 0:
        return labels
    _, inv = np.unique(np.column_stack([labels, rank_region]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    first = np.full(int(inv.max()) + 1, labels.size, np.int64)
    np.minimum.at(first, inv, np.arange(labels.size))
    rank_of_order = np.argsort(first, kind="stable")
    new = np.empty_like(rank_of_order)
    new[rank_of_order] = np.arange(rank_of_order.size)
    return new[inv]


def _first_rank_of_node(rank_node: np.ndarray) -> np.ndarray:
    first = np.full(int(rank_node.max()) + 1, rank_node.size, np.int64)
    np.minimum.at(first, rank_node, np.arange(rank_node.size))
    return first


def group_median(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group index in ``0..n_groups-1`` (NaN for empty groups)."""
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    start = np.searchsorted(g, np.arange(n_groups), side="left")
    count = np.searchsorted(g, np.arange(n_groups), side="right") - start
    has = count > 0
    lo = start[has] + (count[has] - 1) // 2
    hi = start[has] + count[has] // 2
    out[has] = 0.5 * (v[lo] + v[hi])
    return out
