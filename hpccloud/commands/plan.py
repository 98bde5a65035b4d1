"""``hpccloud plan``: a dry run of the balancer against a measured profile (no MPI)."""

from __future__ import annotations

from hpccloud.commands.common import add_topology_arg


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="dry-run the planners on a measured profile from `hpccloud probe --json`")
    p.add_argument("--profile", required=True, metavar="FILE", help="profile written by `hpccloud probe --json`")
    add_topology_arg(p)
    p.add_argument("--shards", type=int, default=None, metavar="S",
                   help="equal shards to place (default: 64 per rank)")
    p.add_argument("--shard-bytes", type=int, default=8 << 20, metavar="B", help="bytes per shard (default 8 MiB)")
    p.add_argument("--work-units", type=float, default=None, metavar="W",
                   help="work units per shard, in the profile's speed units (default: shard-bytes / 8 cells)")
    p.add_argument("--data-class", default=None, metavar="NAME",
                   help="data class of the shards (default: public, else the topology's first)")
    p.add_argument("--planner", default="topo", metavar="NAME",
                   help="static, even, greedy, topo or all (default topo)")
    p.add_argument("--horizon", type=int, default=100, metavar="H", help="steps the plan must pay off within (default 100)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the plan(s) as JSON to OUT")
    p.set_defaults(run=run)


def run(args) -> int:
    from hpccloud.balance import PLANNERS, PlanOptions, plan_problem
    from hpccloud.balance.profile import problem_from_profile
    from hpccloud.commands.common import check_writable, write_json_atomic
    from hpccloud.errors import InvalidArgument
    from hpccloud.io.profile import load_profile
    from hpccloud.topology import read_topology_text, topology_from_text

    names = list(PLANNERS) if args.planner == "all" else [args.planner]
    if names[0] not in PLANNERS:
        raise InvalidArgument(f"--planner: unknown planner {args.planner!r}; choose one of "
                              f"{', '.join(PLANNERS)} or all")
    if args.horizon < 1 or (args.shards is not None and args.shards < 1) or args.shard_bytes < 8:
        raise InvalidArgument("--horizon and --shards must be >= 1 and --shard-bytes >= 8")
    if args.shards is not None and args.shards > 1 << 24:
        raise InvalidArgument(f"--shards {args.shards}: at most {1 << 24}. Fix: plan fewer, larger "
                              "shards (--shard-bytes)")
    if args.json:
        check_writable(args.json)
    profile = load_profile(args.profile)
    P = len(profile["hosts"])
    text, source = read_topology_text(args.topology)
    topo = topology_from_text(text, source, P, profile["hosts"])
    data_class = args.data_class or ("public" if "public" in topo.data_classes else next(iter(topo.data_classes)))
    shards = args.shards or 64 * P
    problem = problem_from_profile(profile, topo, shards=shards, shard_bytes=args.shard_bytes,
                                   work_units_per_shard=args.work_units or args.shard_bytes / 8,
                                   data_class=data_class, source=args.profile)
    opts = PlanOptions(horizon_steps=args.horizon)
    plans = [plan_problem(problem, n, opts) for n in names]
    print(f"hpccloud plan: profile {args.profile} (measured), {P} ranks, topology {topo.name}, "
          f"{shards} shards of {args.shard_bytes} bytes, class {data_class!r}, horizon {args.horizon}")
    print(f"{'planner':<8}{'before_s':>11}{'after_s':>11}{'T/T*':>8}{'moves':>8}{'migr_s':>10}"
          f"{'horizon_total_s':>17}{'cost':>10}{'gate':>6}")
    for mp in plans:
        print(f"{mp.planner:<8}{mp.makespan_before_s:>11.4f}{mp.makespan_after_s:>11.4f}{mp.ratio_to_bound:>8.3f}"
              f"{len(mp.moves):>8}{mp.migration_s:>10.4f}{mp.horizon_total_s:>17.3f}{mp.resource_cost:>10.4f}"
              f"{'yes' if mp.gate_passed else 'no':>6}")
    if args.json:
        write_json_atomic(args.json, {"profile": args.profile, "topology": topo.source, "shards": shards,
                                      "data_class": data_class,
                                      "plans": [mp.to_json(include_owners=False) for mp in plans]})
    return 0

