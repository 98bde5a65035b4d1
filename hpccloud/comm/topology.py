"""The collective topology loader: one file read, one answer (or one error) on every rank."""

from __future__ import annotations

import os

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.topology import Topology, node_name, read_topology_text, topology_from_text


def load_topology(path: str | os.PathLike | None = None, comm=None,
                  exclude_regions: tuple[str, ...] = ()) -> Topology:
    """Load and resolve a topology collectively on ``comm`` (default: a 1-rank view).

    Rank 0 reads the file and broadcasts it, every rank contributes its node
    name, and every rank resolves the same inputs, so a bad file raises the
    same :class:`~hpccloud.errors.TopologyError` on every rank.
    ``exclude_regions`` are left out (``hpccloud run --exclude-region``).
    """
    if comm is None:
        text, source = read_topology_text(path)
        return topology_from_text(text, source, 1, [node_name()], tuple(exclude_regions))
    text, source = bcast_result(comm, lambda: read_topology_text(path))
    hosts = comm.allgather(node_name())
    return agree(comm, lambda: topology_from_text(text, source, comm.Get_size(), hosts,
                                                  tuple(exclude_regions)))


__all__ = ["load_topology"]
