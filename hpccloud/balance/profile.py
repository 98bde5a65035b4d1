"""Check a measured profile (``hpccloud probe --json``) and turn it into a planning Problem.

Pure: the file is read at the edge (``hpccloud.commands.plan``); this module
checks the parsed document. The profile holds what the probe measured::

    {"ranks": [{"rank": 0, "host": "n01", "region": "eu-north"}, ...],
     "regions": ["eu-north", "us-east"],
     "pairs": [[0, 1, 2.1e-06, 8.0e+09], ...],       # measured pairs: src, dst, alpha_s, beta
     "speed_units_per_s": [1.6e+09, ...]}             # P

Older profiles carry dense ``alpha_s``/``beta_bytes_per_s`` (P × P, ``null``
diagonal) instead of ``pairs``; both are read. Unmeasured pairs take their
level's figure (see :mod:`hpccloud.measure.levels`).

Every problem is reported as one :class:`~hpccloud.errors.ConfigError` naming
the file, the key and the fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpccloud.balance.problem import Problem, topology_arrays
from hpccloud.errors import ConfigError, InvalidArgument
from hpccloud.measure.links import LinkModel, matrix_from_json


def _bad(path: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}. Fix: {fix}")


def profile_from_doc(doc: Any, path: str) -> dict[str, Any]:
    """Check a probe profile already read from JSON (pure; ``path`` only names it in messages).

    Returns ``hosts``, ``rank_regions``, ``speed_units_per_s`` and ``links`` (a
    :class:`~hpccloud.measure.links.LinkModel` of the measured pairs).
    """
    if not isinstance(doc, dict):
        raise _bad(path, "<top level>", "expected a JSON object", "pass a probe profile")
    for key in ("ranks", "speed_units_per_s"):
        if key not in doc:
            raise _bad(path, key, "missing", "re-run `hpccloud probe --json` (it writes this key)")
    if "pairs" not in doc:
        for key in ("alpha_s", "beta_bytes_per_s"):
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
    if "pairs" not in doc:
        for key in ("alpha_s", "beta_bytes_per_s"):
            _check_matrix(path, key, matrix_from_json(doc, key, path), P, positive=(key == "beta_bytes_per_s"))
    links = LinkModel.from_json(doc, path)
    if links.size != P:
        raise _bad(path, "size", f"the links cover {links.size} ranks but `ranks` lists {P}",
                   "use the profile exactly as the probe wrote it")
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
    return {"hosts": hosts, "rank_regions": regions, "speed_units_per_s": v, "links": links}


def _check_matrix(path: str, key: str, m: np.ndarray, P: int, positive: bool) -> None:
    """A dense matrix of an older profile: P × P, and every value present usable (``null`` = not measured)."""
    if m.shape != (P, P):
        raise _bad(path, key, f"expected a {P} × {P} matrix (one row per rank), got shape {m.shape}",
                   "re-run the probe on the same job")
    off = ~np.eye(P, dtype=bool)
    ok = np.isnan(m) | (np.isfinite(m) & ((m > 0) if positive else (m >= 0)))
    bad = np.argwhere(off & ~ok)
    if bad.size:
        i, j = (int(x) for x in bad[0])
        raise _bad(path, f"{key}[{i}][{j}]", f"{m[i, j]} is not a usable measurement",
                   "re-run the probe (alpha >= 0, beta > 0; null for a pair that was not measured)")


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
    region_names, rank_region, rank_node, price, egress = topology_arrays(topology)
    links = profile["links"].table(rank_region, rank_node, len(region_names))
    try:
        links.check()
    except InvalidArgument as exc:
        raise ConfigError(f"{source}: {exc}. Fix: re-run `hpccloud probe --json` so every level is "
                          "measured") from None
    u = np.arange(shards - 1, dtype=np.int64)
    return Problem(
        work_units=np.full(shards, float(work_units_per_shard)),
        nbytes=np.full(shards, int(shard_bytes), np.int64),
        owners=home[(np.arange(shards) * home.size) // shards].astype(np.int64),
        class_id=np.zeros(shards, np.int64), allowed=allowed,
        edge_u=u, edge_v=u + 1, edge_bytes=np.full(u.size, float(max(8, int(math.sqrt(shard_bytes / 8)) * 8))),
        speed_units_per_s=profile["speed_units_per_s"], links=links,
        rank_region=rank_region, region_names=region_names, price_per_core_hour=price, egress_per_gb=egress,
        class_names=(data_class,), provenance="measured")
