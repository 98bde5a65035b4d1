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


class Policy:
    """Residency rules of one topology (regions, rank → region, data classes)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self._rank_region = np.asarray(topology.rank_region, dtype=object)
        self._rank_rows: dict[str, np.ndarray] = {}  # data class -> ranks it may live on

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
        """
        owners = np.asarray(owners)
        size = self.topology.size
        if owners.shape != (len(shard_map),) or owners.dtype.kind not in "iu":
            raise InvalidArgument(f"owners must be an integer array of shape ({len(shard_map)},), "
                                  f"got {owners.dtype} {owners.shape}")
        bad_rank = np.flatnonzero((owners < 0) | (owners >= size))
        if bad_rank.size:
            s = int(bad_rank[0])
            raise InvalidArgument(f"shard {s} is assigned to rank {int(owners[s])}, which does not "
                                  f"exist (the topology has {size} ranks)")
        mask = self.allowed_mask(shard_map.data_classes())
        ok = mask[np.arange(len(shard_map)), owners]
        if not ok.all():
            s = int(np.flatnonzero(~ok)[0])
            dc = shard_map.shards[s].data_class
            rank = int(owners[s])
            raise ResidencyError(
                f"shard {s} of data class {dc!r} may not live in region "
                f"{self.topology.region_of(rank)!r} (rank {rank}); allowed regions: "
                f"{sorted(self.allowed_regions(dc))}. {int((~ok).sum())} shard(s) in this plan break "
                "residency; nothing was moved")


__all__ = ["Policy"]
