"""Data residency: the single place where hpccloud decides where a shard may live.

A topology file's ``[data_classes.NAME]`` tables (parsed by
:mod:`hpccloud.topology`) say in which regions each data class may live, and
whether derived results (aggregates) of the class may leave those regions.
Planners ask :meth:`Policy.allowed_mask`; the transport calls
:meth:`Policy.check_owners` again before a byte moves. A violation is an
error (:class:`~hpccloud.errors.ResidencyError`), never a warning.

>>> from hpccloud.topology import read_topology_text, topology_from_text
>>> topo = topology_from_text(*read_topology_text(None), size=2)
>>> p = Policy.from_topology(topo)
>>> sorted(p.allowed_regions("eu-personal")), sorted(p.allowed_ranks("eu-personal"))
(['eu-north'], [0])
>>> p.allowed_mask(["public", "eu-personal"]).tolist()
[[True, True], [True, False]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpccloud.errors import ConfigError, InvalidArgument, ResidencyError
from hpccloud.topology import Topology

CHECK_CACHE_MAX_SHARDS = 256  # check_owners remembers passing (owners, classes) up to this size
CHECK_CACHE_ENTRIES = 64


class Policy:
    """Residency rules of one topology (regions, rank → region, data classes)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self._rank_region = np.asarray(topology.rank_region, dtype=object)
        self._rank_rows: dict[str, np.ndarray] = {}  # data class -> ranks it may live on
        # check_owners' memory (insertion-ordered dicts, oldest dropped first)
        self._passed: dict[tuple[bytes, bytes], None] = {}
        self._tables: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_topology(cls, topology: Topology) -> Policy:
        return cls(topology)

    def _class(self, data_class: str):
        try:
            return self.topology.data_classes[data_class]
        except KeyError:
            known = sorted(self.topology.data_classes)
            raise ConfigError(
                f"{self.topology.source}: data class {data_class!r} is not declared "
                f"(declared: {known}). Fix: add a [data_classes.{data_class}] table to the "
                "topology file or use a declared class") from None

    def allowed_regions(self, data_class: str) -> frozenset[str]:
        """Regions where shards of ``data_class`` may live (unknown class: ConfigError)."""
        return self._class(data_class).regions

    def allowed_ranks(self, data_class: str) -> frozenset[int]:
        regions = self.allowed_regions(data_class)
        return frozenset(r for r, g in enumerate(self.topology.rank_region) if g in regions)

    def may_live(self, data_class: str, region: str) -> bool:
        return region in self.allowed_regions(data_class)

    def aggregates_may_leave(self, data_class: str) -> bool:
        """Whether sums/counts over ``data_class`` may be reported outside its regions."""
        return self._class(data_class).aggregates_may_leave

    def allowed_mask(self, data_classes: Sequence[str]) -> np.ndarray:
        """``mask[s, p]`` is True when shard ``s`` (of class ``data_classes[s]``) may live on rank ``p``."""
        rows = self._rank_rows  # the topology never changes
        names = sorted(set(data_classes))
        for dc in names:
            if dc not in rows:
                regions = self.allowed_regions(dc)
                rows[dc] = np.fromiter((g in regions for g in self.topology.rank_region), bool,
                                       self.topology.size)
        if len(names) == 1:
            return np.broadcast_to(rows[names[0]], (len(data_classes), self.topology.size)).copy()
        code = {dc: i for i, dc in enumerate(names)}
        table = np.stack([rows[dc] for dc in names])
        return table[np.fromiter((code[dc] for dc in data_classes), np.int64, len(data_classes))]

    def check_owners(self, shard_map, owners) -> None:
        """Raise :class:`ResidencyError` if any shard would live outside its allowed regions.

        The message names the first offending shard, its data class, the rank
        and region it would go to, and the regions it may live in.

        Cached, never skipped: a map of at most :data:`CHECK_CACHE_MAX_SHARDS`
        shards whose exact owners and data classes passed before passes again
        from a small table (key: the owner column's bytes and the map's
        :meth:`~hpccloud.shards.ShardMap.data_classes_key`; a failed check is
        never remembered). Larger maps keep each class list's rank table and
        check the owners against it, vectorised, every time.
        """
        owners = np.asarray(owners)
        size = self.topology.size
        if owners.shape != (len(shard_map),) or owners.dtype.kind not in "iu":
            raise InvalidArgument(f"owners must be an integer array of shape ({len(shard_map)},), "
                                  f"got {owners.dtype} {owners.shape}")
        classes_key = shard_map.data_classes_key()
        passed_key = None
        if len(shard_map) <= CHECK_CACHE_MAX_SHARDS:
            # int64 bytes: a value that wraps (uint64 >= 2**63) turns negative and so never
            # matches a key that passed (all of whose ranks are in 0..size-1)
            passed_key = (owners.astype(np.int64, copy=False).tobytes(), classes_key)
            if passed_key in self._passed:
                return
        bad_rank = np.flatnonzero((owners < 0) | (owners >= size))
        if bad_rank.size:
            s = int(bad_rank[0])
            raise InvalidArgument(f"shard {s} is assigned to rank {int(owners[s])}, which does not "
                                  f"exist (the topology has {size} ranks)")
        codes, table = self._class_table(shard_map, classes_key)
        ok = table[codes, owners]
        if not ok.all():
            s = int(np.flatnonzero(~ok)[0])
            dc = shard_map.shards[s].data_class
            rank = int(owners[s])
            raise ResidencyError(
                f"shard {s} of data class {dc!r} may not live in region "
                f"{self.topology.region_of(rank)!r} (rank {rank}); allowed regions: "
                f"{sorted(self.allowed_regions(dc))}. {int((~ok).sum())} shard(s) in this plan break "
                "residency; nothing was moved")
        if passed_key is not None:
            self._passed[passed_key] = None
            if len(self._passed) > CHECK_CACHE_ENTRIES:
                del self._passed[next(iter(self._passed))]  # the oldest

    def _class_table(self, shard_map, classes_key: bytes) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, table)``: ``table[codes[s], p]`` says whether shard ``s`` may live on rank ``p``.

        One row per distinct class (unknown class: ConfigError), remembered per
        class list (the topology never changes).
        """
        hit = self._tables.get(classes_key)
        if hit is None:
            classes = shard_map.data_classes()
            names = sorted(set(classes))
            self.allowed_mask(names)  # fills the per-class rows, names an undeclared class
            code = {dc: i for i, dc in enumerate(names)}
            hit = (np.fromiter((code[dc] for dc in classes), np.int64, len(classes)),
                   np.stack([self._rank_rows[dc] for dc in names]) if names
                   else np.zeros((0, self.topology.size), bool))
            self._tables[classes_key] = hit
            if len(self._tables) > CHECK_CACHE_ENTRIES:
                del self._tables[next(iter(self._tables))]
        return hit


__all__ = ["CHECK_CACHE_MAX_SHARDS", "Policy"]
