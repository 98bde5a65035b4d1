"""The link model: Hockney ``t_ij(n) = alpha_ij + n / beta_ij``, fitted per measured rank pair.

α (latency, seconds) and β (bandwidth, bytes/s) are *fitted* from samples —
ping-pong probe medians and every real shard transfer (:meth:`LinkModel.add_sample`)
— never read from a configuration file. A model built from given numbers (the
simulator's) says so in :attr:`LinkModel.provenance` (``"synthetic"``).

The fit first minimises the *relative* error ``Σ ((α + n γ − t) / t)²`` with
α, γ ≥ 0 (γ = 1/β) by non-negative least squares, so small messages pin α
although times span five decades; β is then refitted by ordinary least squares
on the bandwidth-bound samples only (``n / β ≥ 10 α``), where shard moves live.

>>> import numpy as np
>>> sizes = np.array([8, 1024, 1 << 20, 4 << 20])
>>> alpha, beta = hockney_fit(sizes, 2e-6 + sizes / 8e9)
>>> round(alpha * 1e6, 3), round(beta / 1e9, 3)
(2.0, 8.0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import nnls

from hpccloud.errors import ConfigError, InvalidArgument
from hpccloud.measure.levels import LinkTable, group_median

#: samples kept per ordered pair; older ones fall out so the model follows the links
MAX_SAMPLES_PER_PAIR = 512
#: β reported when the samples show no size dependence at all (an idle, infinitely fast link)
BETA_CAP_BYTES_PER_S = 1e15
#: ``to_json`` adds the dense (P, P) view up to this many ranks (reports plot it)
DENSE_JSON_MAX_RANKS = 256


def hockney_fit(nbytes: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Fit ``t = alpha + n / beta`` to samples; return ``(alpha_s, beta_bytes_per_s)``.

    α from a relative-error fit over all sizes (small messages pin it); β then
    from the bandwidth-bound samples (see the comment below). Needs samples of
    at least two distinct sizes for both parameters, otherwise α is taken as 0
    and β as ``n / t`` (median).
    """
    n = np.asarray(nbytes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    keep = np.isfinite(t) & (t > 0) & np.isfinite(n) & (n >= 0)
    n, t = n[keep], t[keep]
    if n.size == 0:
        return float("nan"), float("nan")
    if np.unique(n).size < 2:
        rate = np.median(n / t) if n[0] > 0 else np.nan
        if n[0] == 0:
            return float(np.median(t)), float("nan")
        return 0.0, float(rate)
    a = np.column_stack([1.0 / t, n / t])
    (alpha, gamma), _ = nnls(a, np.ones_like(t))
    # β from the bandwidth-bound samples alone: an ordinary least-squares slope of
    # (t − α) against n over the samples where n/β is at least 10× α, so the large
    # messages that shard moves are made of set β, not the protocol switches of
    # MPI in between (eager → rendezvous) that a single relative fit averages in
    if gamma > 0:
        big = n >= 10.0 * alpha / gamma
        if big.sum() >= 2:
            excess = np.maximum(t[big] - alpha, 0.0)
            gamma_big = float(np.dot(n[big], excess) / np.dot(n[big], n[big]))
            if gamma_big > 0:
                gamma = gamma_big
    beta = 1.0 / gamma if gamma > 0 else BETA_CAP_BYTES_PER_S
    return float(alpha), float(min(beta, BETA_CAP_BYTES_PER_S))


class LinkModel:
    """Hockney parameters fitted per measured ordered rank pair; level figures for the rest.

    Memory grows with the pairs that were measured (probe samples and the
    job's own transfers), never with P². :meth:`table` turns the fits into a
    :class:`~hpccloud.measure.levels.LinkTable` (per region pair, node pair,
    node, measured pair) that every planner reads.

    Parameters
    ----------
    size : number of ranks P.
    provenance : ``"measured"`` (probes and transfers) or ``"synthetic"``.
    rank_region, rank_node : int [P] region and node index of each rank (the
        probe sets them); default one region, every rank its own node.
    """

    def __init__(self, size: int, provenance: str = "measured", *, rank_region=None, rank_node=None):
        self.size = int(size)
        self.provenance = provenance
        self.rank_region = (np.zeros(self.size, np.int64) if rank_region is None
                            else np.asarray(rank_region, np.int64))
        self.rank_node = np.arange(self.size) if rank_node is None else np.asarray(rank_node, np.int64)
        if self.rank_region.shape != (self.size,) or self.rank_node.shape != (self.size,):
            raise InvalidArgument(f"LinkModel: rank_region and rank_node must have {self.size} entries")
        self._samples: dict[tuple[int, int], deque] = {}
        self._fit: dict[tuple[int, int], tuple[float, float]] = {}
        self._stale: set[tuple[int, int]] = set()  # pairs to refit before the fits are read
        self._table: LinkTable | None = None
        self.n_transfer_samples = 0

    # ------------------------------------------------------------------ samples

    def add_sample(self, src: int, dst: int, nbytes: float, seconds: float,
                   source: str = "transfer", refit: bool = False) -> None:
        """Record that ``nbytes`` went from ``src`` to ``dst`` in ``seconds``."""
        if src == dst:
            return
        q = self._samples.setdefault((int(src), int(dst)), deque(maxlen=MAX_SAMPLES_PER_PAIR))
        q.append((float(nbytes), float(seconds), source))
        if source == "transfer":
            self.n_transfer_samples += 1
        if refit:
            self._refit_pair(int(src), int(dst))

    def refit(self, pairs: Iterable[tuple[int, int]] | None = None) -> None:
        """Refit α and β of ``pairs`` (default: every pair that has samples).

        The fits are computed when they are next read (:meth:`measured_pairs`,
        :meth:`table`, :meth:`to_json`), not here. A migration refits the pairs
        it moved over on every rank, but only the rank that plans reads them: 12
        pairs cost ~0.8 ms of CPU, and with three ranks on one core the refit
        took 1.2-5.8 ms of every migration's wall time (4 ranks, 3+1 cores,
        Mandelbrot, greedy).
        """
        for src, dst in (self._samples if pairs is None else set(pairs)):
            if (src, dst) in self._samples:
                self._stale.add((src, dst))
                self._table = None

    def _refit_stale(self) -> None:
        for src, dst in sorted(self._stale):
            self._refit_pair(src, dst)
        self._stale.clear()

    def _refit_pair(self, src: int, dst: int) -> None:
        s = self._samples[(src, dst)]
        n = np.fromiter((x[0] for x in s), dtype=np.float64, count=len(s))
        t = np.fromiter((x[1] for x in s), dtype=np.float64, count=len(s))
        self._fit[(src, dst)] = hockney_fit(n, t)
        self._table = None

    def set_pairs(self, src, dst, alpha_s, beta_bytes_per_s) -> None:
        """Take given fits for pairs (a stored profile); non-finite ones are left out."""
        for s, d, a, b in zip(np.asarray(src).tolist(), np.asarray(dst).tolist(),
                              np.asarray(alpha_s, float).tolist(), np.asarray(beta_bytes_per_s, float).tolist(),
                              strict=True):
            if s != d and np.isfinite(a) and np.isfinite(b):
                self._fit[(int(s), int(d))] = (float(a), float(b))
                self._stale.discard((int(s), int(d)))
        self._table = None

    def measured_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(src, dst, alpha_s, beta_bytes_per_s)`` of every pair with a finite fit, sorted."""
        self._refit_stale()
        items = sorted((k, v) for k, v in self._fit.items() if np.isfinite(v[0]) and np.isfinite(v[1]))
        src = np.array([k[0] for k, _ in items], np.int64)
        dst = np.array([k[1] for k, _ in items], np.int64)
        alpha = np.array([v[0] for _, v in items], np.float64)
        beta = np.array([v[1] for _, v in items], np.float64)
        return src, dst, alpha, beta

    # ------------------------------------------------------------------ use

    def table(self, rank_region=None, rank_node=None, n_regions: int | None = None) -> LinkTable:
        """The level table of the fits (see :mod:`hpccloud.measure.levels`).

        ``rank_region``/``rank_node`` regroup the ranks (e.g. by the topology's
        regions); by default the model's own grouping is used (and cached).
        """
        if rank_region is None and rank_node is None and self._table is not None:
            return self._table
        src, dst, alpha, beta = self.measured_pairs()
        table = LinkTable.from_pairs(
            src, dst, alpha, beta,
            rank_region=self.rank_region if rank_region is None else rank_region,
            rank_node=self.rank_node if rank_node is None else rank_node,
            n_regions=n_regions, provenance=self.provenance)
        if rank_region is None and rank_node is None:
            self._table = table
        return table

    @property
    def alpha_s(self) -> np.ndarray:
        """(P, P) α view (NaN diagonal; unmeasured pairs take their level's figure); small P only."""
        return self.table().dense()[0]

    @property
    def beta_bytes_per_s(self) -> np.ndarray:
        """(P, P) β view, as :attr:`alpha_s`."""
        return self.table().dense()[1]

    def time_s(self, src: int, dst: int, nbytes: float) -> float:
        """Predicted seconds to send ``nbytes`` from ``src`` to ``dst`` (0 on one rank)."""
        return float(self.table().time_s([src], [dst], nbytes)[0])

    def region_matrix(self, topology) -> tuple[np.ndarray, np.ndarray]:
        """(G, G) medians of α and β over the measured rank pairs of each region pair.

        The diagonal is the median over measured pairs of distinct ranks inside
        a region (NaN when none was measured). Regions follow ``topology.regions``.
        """
        names = list(topology.region_names)
        g = len(names)
        region_id = np.array([names.index(r) for r in topology.rank_region], np.int64)
        src, dst, alpha, beta = self.measured_pairs()
        key = region_id[src] * g + region_id[dst]
        return (group_median(key, alpha, g * g).reshape(g, g),
                group_median(key, beta, g * g).reshape(g, g))

    # ------------------------------------------------------------------ (de)serialise

    def to_json(self) -> dict[str, Any]:
        """Measured pairs, the rank → region/node maps and, for P <= 256, the dense view.

        ``alpha_s``/``beta_bytes_per_s`` (P × P, ``null`` diagonal) are what
        reports plot and older readers expect; they are derived, never read
        back when ``pairs`` is present.
        """
        src, dst, alpha, beta = self.measured_pairs()
        doc: dict[str, Any] = {
            "size": self.size,
            "provenance": self.provenance,
            "format": "pairs+levels",
            "rank_region": self.rank_region.tolist(),
            "rank_node": self.rank_node.tolist(),
            "pairs": [[s, d, a, b] for s, d, a, b in zip(src.tolist(), dst.tolist(), alpha.tolist(),
                                                         beta.tolist(), strict=True)],
            "n_transfer_samples": self.n_transfer_samples,
        }
        if self.size <= DENSE_JSON_MAX_RANKS:
            a, b = self.table().dense()
            doc["alpha_s"], doc["beta_bytes_per_s"] = json_matrix(a), json_matrix(b)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "<link model>") -> LinkModel:
        """Rebuild a model from :meth:`to_json` output or a ``hpccloud probe --json`` profile.

        Reads ``pairs`` (``[src, dst, alpha_s, beta_bytes_per_s]`` rows) when
        present, else the dense ``alpha_s``/``beta_bytes_per_s`` matrices of
        older profiles (every non-null pair counts as measured).
        """
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: expected a JSON object. Fix: use a profile written by "
                              "`hpccloud probe --json`")
        if "pairs" in doc:
            return cls._from_pairs_doc(doc, source)
        alpha = matrix_from_json(doc, "alpha_s", source)
        beta = matrix_from_json(doc, "beta_bytes_per_s", source)
        if alpha.shape != beta.shape or alpha.shape[0] != alpha.shape[1]:
            raise ConfigError(f"{source}: alpha_s is {alpha.shape} and beta_bytes_per_s "
                              f"{beta.shape}; both must be the same P×P. Fix: regenerate the profile")
        P = alpha.shape[0]
        model = cls(P, provenance=doc.get("provenance", "measured"))
        i, j = np.divmod(np.arange(P * P), max(P, 1))
        model.set_pairs(i, j, alpha.ravel(), beta.ravel())
        return model

    @classmethod
    def _from_pairs_doc(cls, doc: dict[str, Any], source: str) -> LinkModel:
        try:
            size = int(doc["size"])
            rows = np.array(doc["pairs"], dtype=np.float64).reshape(-1, 4)
            region = doc.get("rank_region")
            node = doc.get("rank_node")
            model = cls(size, provenance=doc.get("provenance", "measured"), rank_region=region, rank_node=node)
        except KeyError as exc:
            raise ConfigError(f"{source}: missing key {exc.args[0]!r}. Fix: use a profile written "
                              "by `hpccloud probe --json`") from None
        except (TypeError, ValueError, InvalidArgument) as exc:
            raise ConfigError(f"{source}: pairs/size/rank_region/rank_node are malformed ({exc}). "
                              "Fix: regenerate the profile with `hpccloud probe --json`") from None
        src, dst = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
        if rows.size and (src.min() < 0 or dst.min() < 0 or max(src.max(), dst.max()) >= size):
            raise ConfigError(f"{source}: pairs name ranks outside 0..{size - 1}. Fix: regenerate the profile")
        bad = ~((rows[:, 2] >= 0) & (rows[:, 3] > 0))
        if bad.any():
            s, d, a, b = rows[np.flatnonzero(bad)[0]]
            raise ConfigError(f"{source}: pairs: {int(s)} -> {int(d)} has alpha_s={a}, beta_bytes_per_s={b}; "
                              "alpha must be >= 0 and beta > 0. Fix: regenerate the profile")
        model.set_pairs(src, dst, rows[:, 2], rows[:, 3])
        return model

    @classmethod
    def synthetic(cls, alpha_s, beta_bytes_per_s) -> LinkModel:
        """A model from given (P, P) matrices (tests): every finite pair, provenance ``"synthetic"``."""
        alpha = np.array(alpha_s, dtype=np.float64)
        beta = np.array(beta_bytes_per_s, dtype=np.float64)
        P = alpha.shape[0]
        model = cls(P, provenance="synthetic")
        i, j = np.divmod(np.arange(P * P), max(P, 1))
        model.set_pairs(i, j, alpha.ravel(), beta.ravel())
        return model


def json_matrix(m: ArrayLike) -> list[list[float | None]]:
    """A float matrix as JSON rows, ``null`` for NaN/inf."""
    return [[None if not np.isfinite(x) else float(x) for x in row] for row in np.asarray(m, float)]


def matrix_from_rows(rows) -> np.ndarray:
    """Rows of numbers or ``None`` (JSON ``null``) as a float64 matrix, ``None`` -> NaN.

    The one JSON → matrix conversion; raises ``TypeError``/``ValueError`` on
    non-numeric entries (ragged rows give a 1-D object error from numpy).

    >>> matrix_from_rows([[None, 1], [2, None]]).tolist()
    [[nan, 1.0], [2.0, nan]]
    """
    rows = [[np.nan if x is None else float(x) for x in row] for row in rows]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 0))


def matrix_from_json(doc: dict[str, Any], key: str, source: str) -> np.ndarray:
    """``doc[key]`` (rows of numbers or ``null``) as a float64 matrix, ``null`` -> NaN.

    The one JSON → matrix reader (profiles, link models); a missing key or a
    ragged / non-numeric value raises one :class:`ConfigError` naming ``source`` and ``key``.
    """
    if key not in doc:
        raise ConfigError(f"{source}: missing key {key!r}. Fix: use a profile written "
                          "by `hpccloud probe --json`")
    try:
        m = matrix_from_rows(doc[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key} is not a numeric matrix ({exc}). "
                          "Fix: regenerate the profile with `hpccloud probe --json`") from None
    if m.ndim != 2:
        raise ConfigError(f"{source}: {key} is not a square numeric matrix (shape {m.shape}). "
                          "Fix: regenerate the profile with `hpccloud probe --json`")
    return m
