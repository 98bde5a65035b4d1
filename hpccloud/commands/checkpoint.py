"""``hpccloud checkpoint list|verify``: which checkpoints verify, and what a restart would do.

    hpccloud checkpoint list ckpt/
    hpccloud checkpoint verify ckpt/step-00000040 --ranks 2 --topology eu-only.toml

``list`` re-reads every checkpoint under a folder (manifest digest and MAC,
every shard's checksum) and shows which verify. ``verify`` does that for one
checkpoint and then, without running anything, prints what a restart on
``--ranks M`` under ``--topology`` would do: where each data class may live,
how many shards and bytes each rank would read and from which rank files —
or, when a data class can live on no remaining rank, the one message the
restart would stop with (exit 2). No MPI: it runs on a login node.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hpccloud.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("checkpoint", help="list and verify checkpoints; show what a restart would do")
    csub = p.add_subparsers(dest="checkpoint_command", metavar="ACTION", parser_class=type(p))
    csub.required = True
    lp = csub.add_parser("list", help="every checkpoint under DIR, verified (newest last)")
    lp.add_argument("dir", metavar="DIR")
    lp.add_argument("--key-file", metavar="FILE", help="the key the manifests were signed with")
    lp.add_argument("--quick", action="store_true", help="check the manifests only, not every shard")
    lp.set_defaults(run=run_list)
    vp = csub.add_parser("verify", help="re-read and verify one checkpoint; print the restart plan")
    vp.add_argument("path", metavar="DIR", help="a step-NNNNNNNN folder, or a folder of them (newest)")
    vp.add_argument("--ranks", type=int, default=None, metavar="M",
                    help="plan the restart on M ranks (default: as many as wrote it)")
    vp.add_argument("--topology", metavar="FILE", default=None,
                    help="plan the restart on this topology (default: the embedded one)")
    vp.add_argument("--exclude-region", action="append", default=[], metavar="NAME",
                    help="plan the restart without this region (repeatable)")
    vp.add_argument("--key-file", metavar="FILE", help="the key the manifest was signed with")
    vp.set_defaults(run=run_verify)


def _key(path: str | None) -> bytes | None:
    if not path:
        return None
    from hpccloud.keys import load_key

    return load_key(path)


def run_list(args) -> int:
    from hpccloud.errors import ChecksumError
    from hpccloud.io.checkpoint import (
        folder_problem,
        list_checkpoints,
        read_manifest,
        verify_checkpoint,
    )

    key = _key(args.key_file)
    why = folder_problem(args.dir)
    if why is not None:
        raise ConfigError(f"{args.dir}: not a folder of checkpoints: it {why}. Fix: pass the "
                          "--checkpoint-dir of a run")
    found = list_checkpoints(args.dir)
    if not found:
        raise ConfigError(f"{args.dir}: no step-NNNNNNNN checkpoint folders. Fix: pass the "
                          "--checkpoint-dir of a run")
    print(f"{'step':>8}  {'ranks':>5}  {'shards':>6}  {'MB':>8}  status  path")
    good = 0
    for step, path in found:
        try:
            if args.quick:
                m = read_manifest(path, key)
                row = (m["ranks"], len(m["shard_rank"]), float("nan"))
            else:
                s = verify_checkpoint(path, key)
                row = (s["ranks"], s["shards_verified"], s["bytes"] / 1e6)
            good += 1
            print(f"{step:>8}  {row[0]:>5}  {row[1]:>6}  {row[2]:>8.2f}  ok      {path}")
        except (ConfigError, ChecksumError) as exc:
            print(f"{step:>8}  {'-':>5}  {'-':>6}  {'-':>8}  FAILED  {path}: {exc}")
    print(f"{good} of {len(found)} checkpoints verify")
    return 0 if good else 1


def run_verify(args) -> int:
    from hpccloud.commands.simulate import MAX_RANKS
    from hpccloud.errors import InvalidArgument
    from hpccloud.io.checkpoint import MANIFEST, list_checkpoints, read_manifest, verify_checkpoint
    from hpccloud.topology import read_topology_text, topology_from_text

    if args.ranks is not None and not 1 <= args.ranks <= MAX_RANKS:
        raise InvalidArgument(f"--ranks {args.ranks}: must be between 1 and {MAX_RANKS}. Fix: "
                              "give the rank count the restart will run on")
    key = _key(args.key_file)
    path = args.path
    # a folder of checkpoints: its newest (read_manifest explains a file, a loop, a missing path)
    if os.path.isdir(path) and not os.path.lexists(os.path.join(path, MANIFEST)) \
            and list_checkpoints(path):
        path = list_checkpoints(path)[-1][1]
    summary = verify_checkpoint(path, key)
    manifest = read_manifest(path, key)
    print(f"{path}: verified — step {summary['step']}, written by {summary['ranks']} ranks, "
          f"{summary['shards_verified']} of {summary['shards']} shards ({summary['bytes'] / 1e6:.2f} MB) "
          f"checksum-verified, manifest {'signed (HMAC)' if summary['signed'] else 'sha256'}; "
          f"workload {summary['workload']}")
    if summary["backup"]:
        print(f"  backup copy in region {summary['backup']['region']}: holds "
              f"{', '.join(summary['backup']['files_held'])}")
    ranks = args.ranks if args.ranks is not None else summary["ranks"]
    text, source = read_topology_text(args.topology)
    topo = topology_from_text(text, source, ranks, exclude_regions=tuple(args.exclude_region))
    plan = restart_plan(manifest, topo, os.path.join(path, MANIFEST))
    print(f"restart on {ranks} ranks, topology {topo.name} ({source}):")
    for dc, regions in sorted(plan["classes"].items()):
        print(f"  data class {dc!r}: {plan['class_shards'][dc]} shards, may live in {regions}")
    for r in range(ranks):
        files = plan["reads"][r]
        print(f"  rank {r:>3} ({topo.region_of(r)}): {plan['shards_per_rank'][r]} shards, "
              f"{plan['bytes_per_rank'][r] / 1e6:.2f} MB"
              + (f", read from {', '.join(files)}" if files else ""))
    return 0


def restart_plan(manifest: dict[str, Any], topology, mpath: str = "manifest.json"
                 ) -> dict[str, Any]:
    """Where a restart on ``topology`` would put each shard of a checkpoint (pure).

    The same placement as the run's restart stage
    (:func:`hpccloud.runner.checkpointing.restart_map`): the workload's declared
    classes, effective halo classes of *this* topology, owners kept where the
    rank exists (same rank count), else the work split evenly, then every shard
    its rank may not hold moved to an allowed rank. Raises the run's own
    :class:`ConfigError` when a class can live on no rank.
    """
    from hpccloud.io.checkpoint import check_workload_map
    from hpccloud.policy import Policy
    from hpccloud.runner.residency import halo_closed, place_resident
    from hpccloud.shards import ShardMap, assign_owners
    from hpccloud.workloads import make_workload

    st = manifest["state"]
    wl = make_workload(st.get("workload"), st.get("params"))
    declared = wl.shard_map(topology.size)
    check_workload_map(manifest, declared, mpath, wl.name, wl.fixed_shapes)
    saved = ShardMap.from_json(manifest["shard_map"])
    base = saved.with_classes(declared.data_classes())
    owners = base.owners()
    if int(manifest["ranks"]) != topology.size or owners.max(initial=0) >= topology.size:
        owners = assign_owners(np.maximum(base.work_units(), 1e-12), topology.size)
    smap = base.with_owners(owners, version=base.version)
    policy = Policy.from_topology(topology)
    if wl.halo:
        smap, policy = halo_closed(smap, topology)
    smap = place_resident(smap, policy)
    wl.refuse_residency(smap, policy)
    owners = smap.owners()
    classes = sorted(set(smap.data_classes()))
    reads: list[set[str]] = [set() for _ in range(topology.size)]
    for s in smap.shards:
        reads[owners[s.id]].add(manifest["files"][manifest["shard_rank"][str(s.id)]])
    return {"owners": owners.tolist(),
            "classes": {dc: sorted(policy.allowed_regions(dc)) for dc in classes},
            "class_shards": {dc: sum(1 for s in smap.shards if s.data_class == dc) for dc in classes},
            "shards_per_rank": np.bincount(owners, minlength=topology.size).tolist(),
            "bytes_per_rank": np.bincount(owners, weights=smap.nbytes(),
                                          minlength=topology.size).tolist(),
            "reads": [sorted(x) for x in reads]}
