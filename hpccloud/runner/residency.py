"""Residency transforms of the run: effective halo classes, where data starts, what a rank holds.

Every entry point through which data reaches a rank — generated data, ``--input``,
a checkpoint, a plan, a halo face — goes through these checks against the
*current* topology before the data is read or stored there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpccloud.errors import ConfigError, ResidencyError
from hpccloud.policy import Policy
from hpccloud.shards import ShardMap
from hpccloud.topology import DataClass

#: joins the classes of an effective (halo) class; a topology may not use it in a class name
#: (the topology validator refuses it), so effective classes live in a namespace of their own
EFFECTIVE_JOIN = "+"


def effective_name(classes) -> str:
    """The effective class of a tile whose halo holds data of ``classes``."""
    return EFFECTIVE_JOIN.join(sorted(set(classes)))


def base_classes(name: str) -> list[str]:
    """The declared classes an effective class stands for (a declared class: itself)."""
    return name.split(EFFECTIVE_JOIN)


def halo_closed(shard_map: ShardMap, topology) -> tuple[ShardMap, Policy]:
    """Shard map and policy in which a tile may only live where its neighbours' data may.

    A halo face is raw data of the neighbour tile: sending it to a rank is storing
    it there. So a tile whose neighbours have other data classes gets an
    *effective* class ``"a+b"`` allowed only in the intersection of their regions.
    The effective class is always derived from the declared ones (a topology
    cannot declare a name with ``+``), so no file can widen it.
    ``shard_map`` must carry the declared (base) classes.
    """
    declared = topology.data_classes
    classes = dict(declared)
    names = []
    for s in shard_map.shards:
        group = sorted({s.data_class, *(shard_map.shards[n].data_class for n in s.neighbours)})
        for c in group:
            if c not in declared:
                raise ConfigError(f"{topology.source}: the workload uses data class {c!r}, which "
                                  f"the topology does not declare. Fix: add [data_classes.{c}]")
        name = effective_name(group)
        if len(group) > 1 and name not in classes:
            allowed = frozenset.intersection(*(declared[c].regions for c in group))
            if not allowed:
                raise ConfigError(f"{topology.source}: tile {s.id} neighbours data classes {group} "
                                  "that share no region, so its halo could live nowhere. Fix: "
                                  "allow the classes a common region")
            classes[name] = DataClass(name, allowed,
                                      all(declared[c].aggregates_may_leave for c in group))
        names.append(name)
    topo = dataclasses.replace(topology, data_classes=classes)
    return shard_map.with_classes(names), Policy.from_topology(topo)


def unplaceable_classes(shard_map: ShardMap, policy: Policy) -> list[str]:
    """Data classes of ``shard_map`` that no rank of the job may hold."""
    return sorted(c for c in set(shard_map.data_classes()) if not policy.allowed_ranks(c))


def refuse_unplaceable(shard_map: ShardMap, policy: Policy) -> None:
    """Stop before any data is read when a class can live on no rank of this job."""
    bad = unplaceable_classes(shard_map, policy)
    if not bad:
        return
    topo = policy.topology
    # name the declared classes the user knows, not the effective halo classes
    declared = sorted({c for name in bad for c in base_classes(name)
                       if c in topo.data_classes and not policy.allowed_ranks(c)})
    bad = declared or bad
    parts = [f"{c!r} may live only in {sorted(policy.allowed_regions(c))}" for c in bad]
    raise ConfigError(f"{topo.source}: data class {'; '.join(parts)}, and this job has ranks "
                      f"only in {sorted(set(topo.rank_region))}. Fix: map ranks to one of "
                      "those regions, or run without that data")


def place_resident(shard_map: ShardMap, policy: Policy) -> ShardMap:
    """Move shards whose owner may not hold them to the least-loaded allowed rank.

    This is where data *starts* (or restarts): in a region where it may live.
    Pure and deterministic; the version is kept (nothing has moved yet).

    >>> from hpccloud.shards import block_1d
    >>> from hpccloud.topology import read_topology_text, topology_from_text
    >>> topo = topology_from_text(*read_topology_text(None), size=2)
    >>> m = block_1d(8, 4, "<f8", size=2, data_class="eu-personal")
    >>> place_resident(m, Policy.from_topology(topo)).owners().tolist()  # rank 0 is in the EU
    [0, 0, 0, 0]
    """
    refuse_unplaceable(shard_map, policy)
    owners = shard_map.owners()
    mask = policy.allowed_mask(shard_map.data_classes())
    bad = np.flatnonzero(~mask[np.arange(len(shard_map)), owners])
    if not bad.size:
        return shard_map
    work = np.bincount(owners, weights=shard_map.work_units(), minlength=policy.topology.size)
    for sid in bad.tolist():
        allowed = np.flatnonzero(mask[sid])
        best = int(allowed[np.argmin(work[allowed])])  # ties: the lowest rank
        work[owners[sid]] -= shard_map.shards[sid].work_units
        work[best] += shard_map.shards[sid].work_units
        owners[sid] = best
    return shard_map.with_owners(owners, version=shard_map.version)


def check_held(shard_map: ShardMap, policy: Policy, rank: int, held) -> None:
    """Raise :class:`ResidencyError` if ``rank`` holds a shard its region may not hold.

    ``held`` are the shard ids the rank has in memory (its ``local`` dict).
    The run calls it wherever data enters a rank, and at every step when
    ``HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP=1`` (a test mode).
    """
    region = policy.topology.region_of(rank)
    for sid in held:
        dc = shard_map.shards[sid].data_class
        if not policy.may_live(dc, region):
            raise ResidencyError(f"rank {rank} in region {region!r} holds shard {sid} of data "
                                 f"class {dc!r}, which may live only in "
                                 f"{sorted(policy.allowed_regions(dc))}")
        if shard_map.shards[sid].owner_rank != rank:
            raise ResidencyError(f"rank {rank} holds shard {sid}, which the map gives to rank "
                                 f"{shard_map.shards[sid].owner_rank}")
