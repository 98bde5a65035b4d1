"""Discover regions from measured links alone, and compare them with the declared topology.

Pure functions (numpy only, no MPI): :func:`discover_regions` takes the P×P
Hockney matrices a link probe measured and groups the ranks into regions;
:func:`compare_regions` checks that grouping against the topology file's
``rank_region``.

Method
------
1. **One cost per link.** Each ordered pair's cost is the predicted time of a
   reference message, ``t_ij = α_ij + n_ref / β_ij`` (``n_ref`` = 64 KiB by
   default), so a link that is slow in latency, in bandwidth or in both costs
   more. The two directions are merged by their *minimum*: timing noise
   (a rank descheduled on a busy node, contention) only ever adds time, so the
   faster direction is the better estimate of what the link can do, and one
   disturbed direction cannot split a region. (A link slow in one direction
   only therefore counts as fast.) A cost below what any link could do
   (``n_ref`` at :data:`MAX_PLAUSIBLE_BYTES_PER_S`, 100 GB/s) is an artefact of
   the probe's subtraction on a busy node (e.g. a one-way time clamped to 1 ns)
   and counts as unmeasured; without this, one such artefact would be the
   largest gap of all. A pair with neither direction measured has no cost and
   is left out.
2. **Threshold from the data.** Regions differ by orders of magnitude (tens of
   µs inside a site, milliseconds between sites), so the costs are compared on
   a log scale: sort ``log t`` over all pairs and take the largest gap between
   neighbours. If that gap is a factor of at least ``min_gap_factor`` (5 by
   default), the threshold is its geometric middle; otherwise every link is of
   one kind and there is one region (also for P = 1 and all-equal matrices).
3. **Regions = connected components** of the graph whose edges are the links
   cheaper than the threshold (single-linkage clustering cut at that gap).
   Regions are numbered by their lowest rank.

The result also reports ``separation``: the cheapest link *between* regions over
the dearest link *inside* one (> 1 means every inter-region link is slower than
every intra-region link; single linkage can chain, so this is the check).

Limits: with a single link (P = 2) or only one cost level there is no contrast
to cut, so the result is one region and ``conclusive`` is False. With three or
more tiers of links, the cut is at the largest step, so two regions joined by a
link much faster than the others merge (a judgement any single cut must make).

Examples
--------
>>> import numpy as np
>>> a = np.full((4, 4), 20e-6); a[:2, 2:] = a[2:, :2] = 5e-3; np.fill_diagonal(a, np.nan)
>>> b = np.full((4, 4), 5e9); b[:2, 2:] = b[2:, :2] = 12e6
>>> found = discover_regions(a, b)
>>> found.rank_region
(0, 0, 1, 1)
>>> compare_regions(found.rank_region, ("eu", "eu", "us", "us")).agree
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hpccloud.measure.links import matrix_from_rows

#: reference message size of the per-link cost
DEFAULT_REFERENCE_BYTES = 65536
#: the smallest step between link classes (as a ratio) that counts as a region boundary
DEFAULT_MIN_GAP_FACTOR = 5.0
#: faster than any real link, shared memory included: a cost implying more is an artefact
MAX_PLAUSIBLE_BYTES_PER_S = 100e9


@dataclass(frozen=True)
class DiscoveredRegions:
    """Regions found by :func:`discover_regions`.

    Attributes
    ----------
    rank_region : region index of each rank (regions numbered by lowest rank).
    groups : the ranks of each region.
    threshold_s : links cheaper than this joined ranks (NaN when no cut was made).
    gap_factor : the largest step between sorted link costs (1.0 when < 2 costs).
    separation : cheapest inter-region cost / dearest intra-region cost (NaN
        when there is no inter- or no intra-region link).
    conclusive : False when there were too few links (fewer than 2) to compare.
    reference_bytes : message size of the per-link cost.
    """

    rank_region: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    threshold_s: float
    gap_factor: float
    separation: float
    conclusive: bool
    reference_bytes: int
    cost_s: np.ndarray | None = field(repr=False, compare=False)

    @property
    def n_regions(self) -> int:
        return len(self.groups)

    def to_json(self) -> dict:
        def num(x):
            return None if not np.isfinite(x) else float(x)

        return {
            "rank_region": list(self.rank_region),
            "groups": [list(g) for g in self.groups],
            "threshold_s": num(self.threshold_s),
            "gap_factor": num(self.gap_factor),
            "separation": num(self.separation),
            "conclusive": self.conclusive,
            "reference_bytes": self.reference_bytes,
            "method": "single-linkage cut at the largest gap in log link cost "
                      "(alpha + reference_bytes / beta, the cheaper direction of each pair)",
        }


def link_cost_s(alpha_s, beta_bytes_per_s, reference_bytes: int = DEFAULT_REFERENCE_BYTES,
                ) -> np.ndarray:
    """Symmetric P×P cost ``α + n_ref/β``, the cheaper of both directions; NaN = unknown.

    >>> link_cost_s([[np.nan, 1e-3], [3e-3, np.nan]], [[np.nan, 1e12], [1e12, np.nan]], 8)
    array([[  nan, 0.001],
           [0.001,   nan]])
    """
    alpha = np.asarray(alpha_s, dtype=np.float64)
    beta = np.asarray(beta_bytes_per_s, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape[0] != alpha.shape[1] or alpha.shape != beta.shape:
        raise ValueError(f"alpha_s {alpha.shape} and beta_bytes_per_s {beta.shape} must both be P×P")
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = alpha + reference_bytes / beta
    # non-positive, NaN or faster than physics: not a usable measurement
    cost[~(cost > max(reference_bytes, 1) / MAX_PLAUSIBLE_BYTES_PER_S)] = np.nan
    np.fill_diagonal(cost, np.nan)
    return np.fmin(cost, cost.T)  # fmin: a NaN direction yields the other one


def discover_regions(alpha_s, beta_bytes_per_s, reference_bytes: int = DEFAULT_REFERENCE_BYTES,
                     min_gap_factor: float = DEFAULT_MIN_GAP_FACTOR) -> DiscoveredRegions:
    """Group ranks into regions from measured α (s) and β (bytes/s) matrices; see the module doc.

    Parameters
    ----------
    alpha_s, beta_bytes_per_s : (P, P) array-like
        Per ordered pair latency and bandwidth; the diagonal and unmeasured
        pairs may be NaN (or None).
    reference_bytes : int
        Message size of the per-link cost ``α + reference_bytes / β``.
    min_gap_factor : float
        A step in sorted link costs smaller than this ratio is noise, not a
        region boundary.
    """
    if min_gap_factor <= 1.0:
        raise ValueError(f"min_gap_factor must be > 1, got {min_gap_factor}")
    alpha = matrix_from_rows(alpha_s)
    beta = matrix_from_rows(beta_bytes_per_s)
    cost = link_cost_s(alpha, beta, reference_bytes)
    size = cost.shape[0]
    i, j = np.triu_indices(size, k=1)
    keep = np.isfinite(cost[i, j])
    found = discover_from_pairs(size, i[keep], j[keep], cost[i[keep], j[keep]],
                                reference_bytes=reference_bytes, min_gap_factor=min_gap_factor)
    return dataclasses.replace(found, cost_s=cost)


def pair_cost_s(src, dst, alpha_s, beta_bytes_per_s, reference_bytes: int = DEFAULT_REFERENCE_BYTES):
    """``(a, b, cost)`` per unordered measured pair, ``a < b``: the cheaper direction of ``α + n_ref/β``.

    Costs below what any link could do are dropped as artefacts (see the module notes).
    """
    src = np.asarray(src, np.int64)
    dst = np.asarray(dst, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.asarray(alpha_s, float) + reference_bytes / np.asarray(beta_bytes_per_s, float)
    ok = (cost > max(reference_bytes, 1) / MAX_PLAUSIBLE_BYTES_PER_S) & (src != dst)
    a, b, cost = np.minimum(src, dst)[ok], np.maximum(src, dst)[ok], cost[ok]
    if a.size == 0:
        return a, b, cost
    order = np.lexsort((cost, b, a))
    a, b, cost = a[order], b[order], cost[order]
    first = np.concatenate([[True], (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
    return a[first], b[first], cost[first]


def discover_from_pairs(size: int, a, b, cost_s, *, rank_node=None,
                        reference_bytes: int = DEFAULT_REFERENCE_BYTES,
                        min_gap_factor: float = DEFAULT_MIN_GAP_FACTOR) -> DiscoveredRegions:
    """Regions from the *measured* pairs only (a sampled probe): O(pairs + P), no P × P matrix.

    ``a``, ``b``, ``cost_s`` are unordered pairs and their costs (:func:`pair_cost_s`).
    ``rank_node`` (optional) joins the ranks of one node before the cut: a host
    is one place, and a sampled probe measures only a few of its pairs.
    """
    if min_gap_factor <= 1.0:
        raise ValueError(f"min_gap_factor must be > 1, got {min_gap_factor}")
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    cost = np.asarray(cost_s, float)
    log_sorted = np.sort(np.log(cost))
    threshold_s, gap_factor = np.nan, 1.0
    if log_sorted.size >= 2:
        steps = np.diff(log_sorted)
        k = int(np.argmax(steps))
        gap_factor = float(np.exp(steps[k]))
        if gap_factor >= min_gap_factor:
            threshold_s = float(np.exp((log_sorted[k] + log_sorted[k + 1]) / 2.0))
    fast = cost <= threshold_s if np.isfinite(threshold_s) else np.ones(cost.size, bool)
    ea, eb = a[fast], b[fast]
    if rank_node is not None:  # join each rank to the first rank of its node
        node = np.asarray(rank_node, np.int64)
        first = np.full(int(node.max()) + 1, size, np.int64)
        np.minimum.at(first, node, np.arange(size))
        ea, eb = np.concatenate([ea, first[node]]), np.concatenate([eb, np.arange(size)])
    labels = union_components(size, ea, eb)
    groups = tuple(tuple(int(r) for r in np.flatnonzero(labels == g))
                   for g in range(labels.max() + 1)) if size else ()
    same = labels[a] == labels[b]
    separation = (float(cost[~same].min() / cost[same].max())
                  if same.any() and (~same).any() else float("nan"))
    return DiscoveredRegions(
        rank_region=tuple(int(x) for x in labels), groups=groups, threshold_s=threshold_s,
        gap_factor=gap_factor, separation=separation, conclusive=bool(log_sorted.size >= 2),
        reference_bytes=int(reference_bytes), cost_s=None)


def union_components(size: int, edge_a, edge_b) -> np.ndarray:
    """Union-find over an edge list (node ``edge_a[k]`` joined to ``edge_b[k]``); labels
    numbered by lowest member.

    >>> union_components(4, [2, 0], [3, 2]).tolist()
    [0, 1, 0, 0]
    """
    parent = list(range(size))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(np.asarray(edge_a).tolist(), np.asarray(edge_b).tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root is always the lowest rank
    roots = [find(i) for i in range(size)]
    order = {root: n for n, root in enumerate(sorted(set(roots)))}
    return np.array([order[r] for r in roots], dtype=np.int64)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class RegionComparison:
    """How measured regions compare with declared ones (as partitions: names do not matter).

    Attributes
    ----------
    agree : the two partitions of the ranks are the same.
    disagreements : one sentence per mismatch (empty when they agree).
    names : a name for each discovered region: the declared region with exactly
        its ranks, else ``"measured-<k>"``.
    """

    agree: bool
    disagreements: tuple[str, ...]
    names: tuple[str, ...]


def compare_regions(discovered: Sequence, declared: Sequence[str]) -> RegionComparison:
    """Compare a discovered ``rank_region`` (any labels) with the declared one.

    >>> compare_regions((0, 0, 1), ("a", "a", "b")).agree
    True
    >>> c = compare_regions((0, 0, 0), ("a", "a", "b"))
    >>> c.agree, c.disagreements
    (False, ("ranks 0-2 measure as one region but are declared in 'a' (0-1), 'b' (2)",))
    """
    if len(discovered) != len(declared):
        raise ValueError(f"{len(discovered)} discovered ranks but {len(declared)} declared")
    found = _groups(discovered)
    wanted = _groups(declared)
    found_sets = {frozenset(g) for g in found.values()}
    wanted_sets = {frozenset(g) for g in wanted.values()}
    problems = []
    for ranks in found.values():
        names = list(dict.fromkeys(declared[r] for r in ranks))
        if len(names) > 1:
            parts = ", ".join(f"{n!r} ({_span(wanted[n] & set(ranks))})" for n in names)
            problems.append(f"ranks {_span(ranks)} measure as one region but are declared in {parts}")
    for name, ranks in wanted.items():
        labels = list(dict.fromkeys(discovered[r] for r in sorted(ranks)))
        if len(labels) > 1:
            parts = " | ".join(_span(found[lab] & ranks) for lab in labels)
            problems.append(f"declared region {name!r} (ranks {_span(ranks)}) measures as "
                            f"{len(labels)} regions: {parts}")
    by_set = {frozenset(g): n for n, g in wanted.items()}
    names = []
    for k, ranks in enumerate(found.values()):
        names.append(by_set.get(frozenset(ranks), f"measured-{k}"))
    return RegionComparison(agree=found_sets == wanted_sets, disagreements=tuple(problems),
                            names=tuple(names))


def _groups(labels: Sequence) -> dict:
    out: dict = {}
    for rank, lab in enumerate(labels):
        out.setdefault(lab, set()).add(rank)
    return dict(sorted(out.items(), key=lambda kv: min(kv[1])))


def _span(ranks) -> str:
    """``{0,1,2,5}`` -> ``'0-2,5'``."""
    ranks = sorted(ranks)
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ",".join(out)
