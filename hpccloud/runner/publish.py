"""Publish stage: the results, one HDF5 file per region plus a catalogue and its XDMF sidecar.

A region's results are gathered to the region's lowest rank and written inside
the region; the data classes decide where results may be stored (checked
against the policy before a byte is written). ``catalogue.h5`` stitches the
global array from the region files as a virtual dataset. Every file carries
the run's provenance (run id, step, workload and parameters, config digest,
hpccloud version); the catalogue's dataset has the workload's units and its
axes as dimension scales, and ``catalogue.xmf`` lets ParaView/VisIt open it.
The manifest is written last (:mod:`hpccloud.io.publish`).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.comm.regions import gather_to_region_leader
from hpccloud.io.hdf5 import write_catalogue, write_region_file
from hpccloud.io.provenance import provenance
from hpccloud.io.xdmf import write_xdmf


def run_metadata(job, step: int) -> dict[str, Any]:
    """The provenance attributes of this job's files after ``step`` steps."""
    meta = provenance(run_id=job.run_id, step=step, workload=job.wl.name, params=job.wl.params,
                      config=msgspec.to_builtins(job.cfg), ranks=job.size,
                      topology=job.topology.name)
    claims = getattr(job, "claims", None)
    if claims is not None:  # the digest the validation pass and the manifest use
        meta["config_digest"] = claims.config_digest
    return meta


def write_output(job) -> dict[str, Any]:
    """Collective: write the region files, the catalogue and the sidecar into ``--output``,
    then the manifest last (:mod:`hpccloud.io.publish`: the folder was claimed by the
    validation pass; its old manifest goes before the first new file lands)."""
    from hpccloud.comm.validate import publish_output
    from hpccloud.io.publish import begin_replace

    folder = os.path.abspath(job.cfg.output)
    bcast_result(job.comm, lambda: begin_replace(folder))
    step = job.cfg.steps
    meta = run_metadata(job, step)
    rmap = job.wl.result_map(job.shard_map)
    results = {sid: job.wl.result(job.shard_map.shards[sid], arr) for sid, arr in job.local.items()}
    region = job.topology.region_of(job.rank)
    leader, gathered = gather_to_region_leader(job.comm, job.topology, rmap, results)
    path = os.path.join(folder, f"{region}.h5")
    # the data classes decide where results may be stored: check against the data map's
    classes_map = rmap.with_classes(job.shard_map.data_classes())

    def write():
        if leader:
            write_region_file(path, region, classes_map, gathered, policy=job.policy, attrs=meta)
    agree(job.comm, write)
    files = {g: os.path.join(folder, f"{g}.h5") for g in set(job.topology.rank_region)}
    shard_region = {s.id: job.topology.region_of(s.owner_rank) for s in rmap.shards}
    cat = os.path.join(folder, "catalogue.h5")
    xmf = os.path.join(folder, "catalogue.xmf")
    shape = tuple(rmap.global_shape)
    sidecar = 1 <= len(shape) <= 3

    def catalogue():
        axes = job.wl.result_axes(shape, step)
        write_catalogue(cat, rmap, files, shard_region, attrs=meta, axes=axes,
                        units=job.wl.result_units, long_name=job.wl.result_long_name or None)
        if sidecar:
            write_xdmf(xmf, cat, "data", shape, rmap.dtype, axes=axes, name=job.wl.name,
                       time=step)
    bcast_result(job.comm, catalogue)
    written = [*files.values(), cat, *([xmf] if sidecar else [])]
    manifest = publish_output(job.comm, job.claims, folder, step, written)
    out = {"catalogue": cat, "region_files": files,
           "manifest": os.path.join(folder, "manifest.json"),
           "config_digest": manifest["config_digest"]}
    if sidecar:
        out["xdmf"] = xmf
    return out
