"""Read a measured profile (``hpccloud probe --json``) and turn it into a planning Problem.

The profile holds what the probe measured on a real job::

    {"ranks": [{"rank": 0, "host": "n01", "region": "eu-north"}, ...],
     "regions": ["eu-north", "us-east"],
     "alpha_s": [[null, 2.1e-06, ...], ...],          # P × P, null diagonal
     "beta_bytes_per_s": [[null, 8.0e+09, ...], ...], # P × P, null diagonal
     "speed_units_per_s": [1.6e+09, ...]}             # P

Every problem is reported as one :class:`~hpccloud.errors.ConfigError` naming
the file, the key and the fix.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from hpccloud.balance.problem import Problem
from hpccloud.errors import ConfigError


def _bad(path: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}. Fix: {fix}")


def load_profile(path: str) -> dict[str, Any]:
    """Read and check a probe profile; returns ``ranks``, ``hosts``, ``rank_regions`` and arrays."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the profile ({exc.strerror}). "
                          "Fix: pass the file written by `hpccloud probe --json FILE`.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}). "
                          "Fix: pass the file written by `hpccloud probe --json FILE`.") from None
    if not isinstance(doc, dict):
        raise _bad(path, "<top level>", "expected a JSON object", "pass a probe profile")
    for key in ("ranks", "alpha_s", "beta_bytes_per_s", "speed_units_per_s"):
        if key not in doc:
            raise _bad(path, key, "missing", "re-run `hpccloud probe --json` (it writes this key)")
    ranks = doc["ranks"]
    if not isinstance(ranks, list) or not ranks:
        raise _bad(path, "ranks", "expected a non-empty list of {rank, host, region}", "re-run the probe")
    P = len(ranks)
    hosts, regions = [], []
    for i, r in enumerate(ranks):
        if not isinstance(r, dict) or r.get("rank") != i or not isinstance(r.get("region"), str):
            raise _bad(path, f"ranks[{i}]", f"expected {{\"rank\": {i}, \"host\": ..., \"region\": ...}}, got {r!r}",
                       "list every rank once, in rank order")
        hosts.append(str(r.get("host", "localhost")))
        regions.append(r["region"])
    arrays = {}
    for key in ("alpha_s", "beta_bytes_per_s"):
        arrays[key] = _matrix(path, key, doc[key], P, positive=(key == "beta_bytes_per_s"))
    speed = doc["speed_units_per_s"]
    try:
        v = np.array(speed, dtype=np.float64)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if v.shape != (P,) or not np.all(np.isfinite(v)) or not np.all(v > 0):
        raise _bad(path, "speed_units_per_s", f"expected {P} positive numbers (one per rank), got {speed!r:.80}",
                   "re-run the probe so every rank's speed is measured")
    if "regions" in doc:
        names = [g["name"] if isinstance(g, dict) else g for g in doc["regions"]]
        missing = sorted(set(regions) - set(names))
        if missing:
            raise _bad(path, "regions", f"ranks name region(s) {missing} that `regions` does not list",
                       "use the profile exactly as the probe wrote it")
    return {"hosts": hosts, "rank_regions": regions, "speed_units_per_s": v, **arrays}


def _matrix(path: str, key: str, raw: Any, P: int, positive: bool) -> np.ndarray:
    try:
        m = np.array(raw, dtype=np.float64)  # JSON null -> nan
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (P, P):
        raise _bad(path, key, f"expected a {P} × {P} matrix (one row per rank), got shape {m.shape}",
                   "re-run the probe on the same job")
    off = ~np.eye(P, dtype=bool)
    ok = np.isfinite(m) & ((m > 0) if positive else (m >= 0))
    bad = np.argwhere(off & ~ok)
    if bad.size:
        i, j = (int(x) for x in bad[0])
        val = m[i, j]
        raise _bad(path, f"{key}[{i}][{j}]", f"{'missing' if math.isnan(val) else val} is not a usable "
                   f"measurement", "re-run the probe so every rank pair is measured")
    return m


def problem_from_profile(profile: dict[str, Any], topology, *, shards: int, shard_bytes: int,
                         work_units_per_shard: float, data_class: str, source: str) -> Problem:
    """A dry-run Problem: ``shards`` equal strips on even contiguous blocks, the measured machine.

    ``topology`` must map the profile's ranks to the same regions (it supplies
    prices and residency); the allowed mask comes from the :mod:`hpccloud.policy`
    when present (the single place residency is decided), else from the
    topology's data classes directly.
    """
    P = len(profile["rank_regions"])
    for r, (got, want) in enumerate(zip(topology.rank_region, profile["rank_regions"], strict=True)):
        if got != want:
            raise ConfigError(f"{source}: ranks[{r}].region is {want!r} but the topology "
                              f"{topology.source} maps rank {r} to {got!r}. Fix: pass the --topology "
                              "file the probe ran with")
    if data_class not in topology.data_classes:
        raise ConfigError(f"--data-class: {data_class!r} is not a data class of {topology.source}. "
                          f"Fix: use one of {sorted(topology.data_classes)}")
    try:
        from hpccloud.policy import Policy
    except ImportError:
        allowed_regions = topology.data_classes[data_class].regions
        allowed = np.array([[g in allowed_regions for g in topology.rank_region]], dtype=bool)
    else:
        allowed = np.asarray(Policy.from_topology(topology).allowed_mask([data_class]), dtype=bool)
        allowed = allowed.reshape(1, P) if allowed.shape != (1, P) else allowed
    home = np.flatnonzero(allowed[0])
    if home.size == 0:
        raise ConfigError(f"--data-class: {data_class!r} may live on none of the profile's {P} ranks. "
                          "Fix: choose a data class allowed in the probed regions")
    region_names = tuple(topology.region_names)
    idx = {g: i for i, g in enumerate(region_names)}
    u = np.arange(shards - 1, dtype=np.int64)
    return Problem(
        work_units=np.full(shards, float(work_units_per_shard)),
        nbytes=np.full(shards, int(shard_bytes), np.int64),
        owners=home[(np.arange(shards) * home.size) // shards].astype(np.int64),
        class_id=np.zeros(shards, np.int64), allowed=allowed,
        edge_u=u, edge_v=u + 1, edge_bytes=np.full(u.size, float(max(8, int(math.sqrt(shard_bytes / 8)) * 8))),
        speed_units_per_s=profile["speed_units_per_s"], alpha_s=profile["alpha_s"],
        beta_bytes_per_s=profile["beta_bytes_per_s"],
        rank_region=np.array([idx[g] for g in topology.rank_region], np.int64), region_names=region_names,
        price_per_core_hour=np.array([topology.region(g).price_per_core_hour for g in topology.rank_region]),
        egress_per_gb=np.array([[topology.egress_price_per_gb(a, b) for b in region_names]
                                for a in region_names]),
        class_names=(data_class,), provenance="measured")
