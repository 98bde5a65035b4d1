"""Publish stage: the results, one HDF5 file per region plus a catalogue.

A region's results are gathered to the region's lowest rank and written inside
the region; the data classes decide where results may be stored (checked
against the policy before a byte is written). ``catalogue.h5`` stitches the
global array from the region files as a virtual dataset.
"""

from __future__ import annotations

import os
from typing import Any

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.comm.regions import gather_to_region_leader
from hpccloud.io.hdf5 import write_catalogue, write_region_file


def write_output(job) -> dict[str, Any]:
    """Collective: write the region files and the catalogue into ``--output``, then the
    manifest last (:mod:`hpccloud.io.publish`: the folder was claimed by the validation pass;
    its old manifest goes before the first new file lands)."""
    from hpccloud.comm.validate import publish_output
    from hpccloud.io.publish import begin_replace

    folder = os.path.abspath(job.cfg.output)
    bcast_result(job.comm, lambda: begin_replace(folder))
    step = job.cfg.steps
    stamp = {"run_id": job.run_id, "step": step}
    rmap = job.wl.result_map(job.shard_map)
    results = {sid: job.wl.result(job.shard_map.shards[sid], arr) for sid, arr in job.local.items()}
    region = job.topology.region_of(job.rank)
    leader, gathered = gather_to_region_leader(job.comm, job.topology, rmap, results)
    path = os.path.join(folder, f"{region}.h5")
    # the data classes decide where results may be stored: check against the data map's
    classes_map = rmap.with_classes(job.shard_map.data_classes())

    def write():
        if leader:
            write_region_file(path, region, classes_map, gathered, policy=job.policy,
                              attrs={"workload": job.wl.name, **stamp})
    agree(job.comm, write)
    files = {g: os.path.join(folder, f"{g}.h5") for g in set(job.topology.rank_region)}
    shard_region = {s.id: job.topology.region_of(s.owner_rank) for s in rmap.shards}
    cat = os.path.join(folder, "catalogue.h5")
    bcast_result(job.comm, lambda: write_catalogue(cat, rmap, files, shard_region, attrs=stamp))
    manifest = publish_output(job.comm, job.claims, folder, step, [*files.values(), cat])
    return {"catalogue": cat, "region_files": files, "manifest": os.path.join(folder, "manifest.json"),
            "config_digest": manifest["config_digest"]}
