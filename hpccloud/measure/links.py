"""The link model: Hockney ``t_ij(n) = alpha_ij + n / beta_ij`` per ordered rank pair.

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
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hpccloud.errors import ConfigError

#: samples kept per ordered pair; older ones fall out so the model follows the links
MAX_SAMPLES_PER_PAIR = 512
#: β reported when the samples show no size dependence at all (an idle, infinitely fast link)
BETA_CAP_BYTES_PER_S = 1e15


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
    """Per ordered rank pair Hockney parameters, fitted from samples.

    Parameters
    ----------
    size : number of ranks P.
    provenance : ``"measured"`` (probes and transfers) or ``"synthetic"``.

    Attributes
    ----------
    alpha_s, beta_bytes_per_s : (P, P) arrays, NaN on the diagonal and for
        pairs without samples.
    """

    def __init__(self, size: int, provenance: str = "measured"):
        self.size = int(size)
        self.provenance = provenance
        self.alpha_s = np.full((size, size), np.nan)
        self.beta_bytes_per_s = np.full((size, size), np.nan)
        self._samples: dict[tuple[int, int], deque] = {}
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

    def samples(self, src: int, dst: int) -> list[tuple[float, float, str]]:
        return list(self._samples.get((src, dst), ()))

    def refit(self) -> None:
        """Refit α and β of every pair that has samples."""
        for src, dst in self._samples:
            self._refit_pair(src, dst)

    def _refit_pair(self, src: int, dst: int) -> None:
        s = self._samples[(src, dst)]
        n = np.fromiter((x[0] for x in s), dtype=np.float64, count=len(s))
        t = np.fromiter((x[1] for x in s), dtype=np.float64, count=len(s))
        self.alpha_s[src, dst], self.beta_bytes_per_s[src, dst] = hockney_fit(n, t)

    # ------------------------------------------------------------------ use

    def time_s(self, src: int, dst: int, nbytes: float) -> float:
        """Predicted seconds to send ``nbytes`` from ``src`` to ``dst`` (0 on one rank)."""
        if src == dst:
            return 0.0
        return float(self.alpha_s[src, dst] + nbytes / self.beta_bytes_per_s[src, dst])

    def time_matrix_s(self, nbytes: float) -> np.ndarray:
        """(P, P) predicted seconds for a message of ``nbytes``; 0 on the diagonal."""
        t = self.alpha_s + nbytes / self.beta_bytes_per_s
        np.fill_diagonal(t, 0.0)
        return t

    def region_matrix(self, topology) -> tuple[np.ndarray, np.ndarray]:
        """(G, G) medians of α and β over the rank pairs of each region pair.

        The diagonal is the median over distinct ranks inside a region (NaN for
        a one-rank region). Regions follow ``topology.regions``.
        """
        names = topology.region_names
        g = len(names)
        alpha = np.full((g, g), np.nan)
        beta = np.full((g, g), np.nan)
        region_id = np.array([names.index(r) for r in topology.rank_region])
        for a in range(g):
            for b in range(g):
                ri = np.flatnonzero(region_id == a)
                rj = np.flatnonzero(region_id == b)
                mask = np.zeros((self.size, self.size), dtype=bool)
                mask[np.ix_(ri, rj)] = True
                np.fill_diagonal(mask, False)
                vals_a = self.alpha_s[mask]
                vals_b = self.beta_bytes_per_s[mask]
                if np.isfinite(vals_a).any():
                    alpha[a, b] = np.nanmedian(vals_a)
                    beta[a, b] = np.nanmedian(vals_b)
        return alpha, beta

    # ------------------------------------------------------------------ (de)serialise

    def to_json(self) -> dict[str, Any]:
        def mat(m):
            return [[None if not np.isfinite(x) else float(x) for x in row] for row in m]

        return {
            "size": self.size,
            "provenance": self.provenance,
            "alpha_s": mat(self.alpha_s),
            "beta_bytes_per_s": mat(self.beta_bytes_per_s),
            "n_transfer_samples": self.n_transfer_samples,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "<link model>") -> LinkModel:
        """Rebuild a model from :meth:`to_json` output or a ``hpccloud probe --json`` profile."""
        try:
            alpha = _matrix(doc["alpha_s"])
            beta = _matrix(doc["beta_bytes_per_s"])
        except KeyError as exc:
            raise ConfigError(f"{source}: missing key {exc.args[0]!r}. Fix: use a profile written "
                              "by `hpccloud probe --json`") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: alpha_s/beta_bytes_per_s are not square numeric "
                              f"matrices ({exc}). Fix: regenerate the profile") from None
        if alpha.shape != beta.shape or alpha.ndim != 2 or alpha.shape[0] != alpha.shape[1]:
            raise ConfigError(f"{source}: alpha_s is {alpha.shape} and beta_bytes_per_s "
                              f"{beta.shape}; both must be the same P×P. Fix: regenerate the profile")
        model = cls(alpha.shape[0], provenance=doc.get("provenance", "measured"))
        model.alpha_s, model.beta_bytes_per_s = alpha, beta
        return model

    @classmethod
    def synthetic(cls, alpha_s, beta_bytes_per_s) -> LinkModel:
        """A model from given matrices (simulator, tests): provenance ``"synthetic"``."""
        alpha = np.array(alpha_s, dtype=np.float64)
        beta = np.array(beta_bytes_per_s, dtype=np.float64)
        model = cls(alpha.shape[0], provenance="synthetic")
        model.alpha_s, model.beta_bytes_per_s = alpha.copy(), beta.copy()
        np.fill_diagonal(model.alpha_s, np.nan)
        np.fill_diagonal(model.beta_bytes_per_s, np.nan)
        return model


def _matrix(rows) -> np.ndarray:
    return np.array([[np.nan if x is None else float(x) for x in row] for row in rows],
                    dtype=np.float64)
