"""``hpccloud probe``: measure links (a sample per level, or every pair) and every rank's speed."""

from __future__ import annotations

import sys
import time

import numpy as np

from hpccloud.commands.common import (
    add_threads_arg,
    add_topology_arg,
    check_writable,
    world,
    write_json_atomic,
)
from hpccloud.errors import InvalidArgument

#: rank × rank tables are printed up to this many ranks
MAX_PRINTED_RANKS = 16
#: ranks listed one per line (regions, speeds) up to this many
MAX_LISTED_RANKS = 64


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="measure links (α, β per level: on-node, node pairs, region pairs) "
                                     "and rank speeds")
    add_topology_arg(p)
    add_threads_arg(p)
    p.add_argument("--json", metavar="OUT", default=None, help="write the measured profile here")
    p.add_argument("--sizes", default=None, metavar="LIST",
                   help="comma-separated message sizes in bytes (default 8 B … 4 MiB)")
    p.add_argument("--speed-kernel", default="stencil2d", help="reference kernel of the speed probe")
    p.add_argument("--speed-seconds", type=float, default=0.3,
                   help="wall-clock window of the speed probe (default 0.3 s)")
    p.add_argument("--serial-pairs", action="store_true",
                   help="measure one pair at a time even when the cores would allow more")
    p.add_argument("--full", action="store_true",
                   help="measure every ordered rank pair (P - 1 rounds) instead of a sample per level")
    p.add_argument("--pairs-per-level", type=int, default=None, metavar="K",
                   help="sample pairs per level and region pair (default 2)")
    p.set_defaults(run=run)


def _sizes(text: str | None):
    from hpccloud.measure.probe import DEFAULT_SIZES

    if text is None:
        return DEFAULT_SIZES
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise InvalidArgument(f"--sizes {text!r}: not a comma-separated list of integers. "
                              "Fix: e.g. --sizes 8,4096,1048576") from None
    if not sizes or min(sizes) < 1:
        raise InvalidArgument(f"--sizes {text!r}: sizes must be >= 1 byte. Fix: e.g. --sizes 8,1048576")
    return sizes


def profile_json(topo, links, speed, elapsed_s: float) -> dict:
    """The ``--json`` document: the measured profile ``hpccloud plan --profile`` reads.

    ``pairs`` are the measured pairs (``[src, dst, alpha_s, beta_bytes_per_s]``);
    ``probe_schedule`` says which pairs were measured at which level and how many
    were inferred; ``levels`` holds the level figures every other pair takes.
    ``alpha_s``/``beta_bytes_per_s`` (P × P, measured or inferred) only up to 256 ranks.
    """
    from hpccloud.measure.links import json_matrix as mat

    link_doc = links.model.to_json()
    ralpha, rbeta = links.model.region_matrix(topo)
    table = links.model.table()

    return {
        "kind": "hpccloud-probe",
        "created_unix_s": time.time(),
        "provenance": "measured",
        "ranks": [{"rank": r, "host": topo.hosts[r], "region": topo.region_of(r)}
                  for r in range(topo.size)],
        "regions": topo.to_json()["regions"],
        "topology": topo.to_json(),
        **{k: link_doc[k] for k in ("size", "format", "rank_region", "rank_node", "pairs",
                                     "alpha_s", "beta_bytes_per_s") if k in link_doc},
        "probe_schedule": links.schedule.to_json() if links.schedule is not None else None,
        "levels": {"region_alpha_s": mat(table.region_alpha_s),
                   "region_beta_bytes_per_s": mat(table.region_beta_bytes_per_s),
                   "node_alpha_s": mat([table.node_alpha_s])[0],
                   "node_beta_bytes_per_s": mat([table.node_beta_bytes_per_s])[0],
                   "regions_by_index": list(topo.region_names)},
        "region_alpha_s": mat(ralpha),
        "region_beta_bytes_per_s": mat(rbeta),
        "sizes_bytes": list(links.sizes),
        "one_way_median_s": [{"src": s, "dst": d, "seconds": t}
                             for (s, d), t in sorted(links.one_way_s.items())],
        "concurrent_pairs": links.concurrent_pairs,
        "speed_kernel": speed.reference_kernel,
        "speed_units_per_s": [float(x) for x in speed.units_per_s],
        "probe_seconds": elapsed_s,
    }


def _print_matrix(title: str, labels, m, scale: float, fmt: str) -> None:
    print(title)
    width = max(8, max(len(str(x)) for x in labels) + 1)
    print(" " * width + "".join(f"{str(x):>{width}}" for x in labels))
    for lab, row in zip(labels, m, strict=True):
        cells = "".join(f"{'—':>{width}}" if not np.isfinite(v) else f"{v * scale:>{width}{fmt}}"
                        for v in row)
        print(f"{str(lab):>{width}}{cells}")


def _discover(model, topo):
    """Regions from the measured pairs alone (ranks of one node joined), compared with the declared ones."""
    from hpccloud.measure.discover import compare_regions, discover_from_pairs, pair_cost_s

    a, b, cost = pair_cost_s(*model.measured_pairs())
    found = discover_from_pairs(model.size, a, b, cost, rank_node=model.rank_node)
    return found, compare_regions(found.rank_region, topo.rank_region)


def _print_discovered(topo, found, versus) -> None:
    print("regions: declared | discovered from measured links")
    if topo.size > MAX_LISTED_RANKS:
        print(f"  {found.n_regions} regions discovered, {len(topo.region_names)} declared: "
              f"{'the same partition' if versus.agree else 'they differ'}")
    for r in range(topo.size if topo.size <= MAX_LISTED_RANKS else 0):
        print(f"  rank {r:>4}  {topo.region_of(r):<12} {versus.names[found.rank_region[r]]}")
    if not found.conclusive:
        print("  (too few links to discover regions from measurements)")
    elif not versus.agree:
        for line in versus.disagreements:
            print(f"hpccloud probe: warning: {line}", file=sys.stderr)


def run(args) -> int:
    from hpccloud.comm.agree import agree, same_on_every_rank
    from hpccloud.comm.topology import load_topology
    from hpccloud.measure.probe import DEFAULT_PAIRS_PER_LEVEL, probe_links, probe_speed
    from hpccloud.threads import configure_threads

    comm = world()
    same_on_every_rank(comm, "hpccloud probe", {k: v for k, v in vars(args).items()
                                                if k != "threads" and not callable(v)})
    sizes = agree(comm, lambda: _sizes(args.sizes))
    if args.json:
        agree(comm, lambda: check_writable(args.json))
    topo = load_topology(args.topology, comm)
    agree(comm, lambda: configure_threads(comm, args.threads))
    t0 = time.perf_counter()
    if args.pairs_per_level is not None and args.pairs_per_level < 1:
        raise InvalidArgument(f"--pairs-per-level {args.pairs_per_level}: must be >= 1. Fix: e.g. --pairs-per-level 2")
    names = list(topo.region_names)
    links = probe_links(comm, sizes, concurrent=False if args.serial_pairs else None,
                        rank_region=[names.index(g) for g in topo.rank_region], hosts=list(topo.hosts),
                        pairs_per_level=args.pairs_per_level or DEFAULT_PAIRS_PER_LEVEL, full=args.full)
    speed = agree(comm, lambda: probe_speed(comm, args.speed_kernel, window_s=args.speed_seconds))
    elapsed = time.perf_counter() - t0
    doc = profile_json(topo, links, speed, elapsed)
    found, versus = _discover(links.model, topo)
    doc["discovered_regions"] = {**found.to_json(), "names": list(versus.names),
                                 "agree_with_declared": versus.agree,
                                 "disagreements": list(versus.disagreements)}
    if comm.Get_rank() == 0:
        model = links.model
        ranks = list(range(topo.size))
        assert links.schedule is not None  # probe_links always returns its schedule
        sched = links.schedule.to_json()
        print(f"hpccloud probe: {topo.size} ranks, topology {topo.name!r} ({topo.source}), "
              f"{len(sizes)} sizes {min(sizes)} B … {max(sizes)} B, "
              f"pairs {'concurrent' if links.concurrent_pairs else 'one at a time'}, {elapsed:.1f} s")
        print(f"pairs ({sched['mode']}, {sched['rounds']} rounds): measured "
              + ", ".join(f"{k} {v}" for k, v in sched["measured_ordered_pairs_by_level"].items())
              + "; inferred " + ", ".join(f"{k} {v}" for k, v in sched["inferred_ordered_pairs_by_level"].items()))
        if 1 < topo.size <= MAX_PRINTED_RANKS:
            alpha, beta = model.table().dense()
            _print_matrix("latency alpha [µs] (row = sender; measured or inferred)", ranks, alpha, 1e6, ".2f")
            _print_matrix("bandwidth beta [GB/s]", ranks, beta, 1e-9, ".2f")
        if topo.size > 1:
            ra, rb = model.region_matrix(topo)
            _print_matrix("by region: latency alpha [µs] (median over measured rank pairs)", topo.region_names,
                          ra, 1e6, ".2f")
            _print_matrix("by region: bandwidth beta [GB/s]", topo.region_names, rb, 1e-9, ".2f")
        _print_discovered(topo, found, versus)
        print(f"speed ({speed.reference_kernel}, units/s, all ranks at once):")
        if topo.size > MAX_LISTED_RANKS:
            q = np.percentile(speed.units_per_s, [0, 50, 100])
            print(f"  min {q[0]:.4g}  median {q[1]:.4g}  max {q[2]:.4g}")
        for r in ranks if topo.size <= MAX_LISTED_RANKS else ():
            print(f"  rank {r:>4}  {topo.region_of(r):<12} {speed.units_per_s[r]:.4g}")
    if args.json:
        agree(comm, lambda: write_json_atomic(args.json, doc) if comm.Get_rank() == 0 else None)
        if comm.Get_rank() == 0:
            print(f"wrote {args.json}")
    return 0
