"""``hpccloud simulate``: every planner side by side on a synthetic scenario (one process, no MPI)."""

from __future__ import annotations

from hpccloud.errors import InvalidArgument

#: the simulator's bounds: 10^5 ranks and beyond are what it is for; past these the
#: arrays alone outgrow a workstation
MAX_RANKS = 1 << 20
MAX_SHARDS = 1 << 24


def add_parser(sub) -> None:
    from hpccloud.balance.scenarios import SCENARIOS

    p = sub.add_parser("simulate", help="run all planners on a synthetic scenario (no MPI; numbers are synthetic)")
    p.add_argument("--ranks", type=int, default=64, metavar="R", help="simulated ranks (default 64)")
    p.add_argument("--regions", type=int, default=2, metavar="G", help="regions (default 2)")
    p.add_argument("--shards", type=int, default=6400, metavar="S", help="shards (default 6400)")
    p.add_argument("--scenario", default="hetero-speed", choices=[*SCENARIOS, "all"],
                   help="which scenario (default hetero-speed; 'all' runs every one)")
    p.add_argument("--steps", type=int, default=200, metavar="K", help="steps of the drift scenario (default 200)")
    p.add_argument("--horizon", type=int, default=20, metavar="H",
                   help="steps between rebalances: the gate's horizon (default 20)")
    p.add_argument("--planners", default=None, metavar="LIST",
                   help="comma-separated planners (default: all of static,even,greedy,metis,topo)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed of the scenario (default 0)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the rows as JSON to OUT")
    p.set_defaults(run=run)


def run(args) -> int:
    from hpccloud.balance import PLANNERS
    from hpccloud.balance.scenarios import SCENARIOS, format_table, simulate
    from hpccloud.commands.common import check_writable, write_json_atomic

    if args.steps < 1 or args.horizon < 1:
        raise InvalidArgument(f"--steps and --horizon must be >= 1 (got {args.steps}, {args.horizon})")
    for flag, value, low, high in (("--ranks", args.ranks, 1, MAX_RANKS),
                                   ("--regions", args.regions, 1, args.ranks),
                                   ("--shards", args.shards, 1, MAX_SHARDS),
                                   ("--steps", args.steps, 1, 1 << 20),
                                   ("--seed", args.seed, 0, 2**63 - 1)):
        if not low <= value <= high:
            raise InvalidArgument(f"{flag} {value}: must be between {low} and {high}. Fix: e.g. "
                                  f"{flag} {min(max(low, 2), high)}")
    if args.json:
        check_writable(args.json)
    planners = args.planners.split(",") if args.planners else list(PLANNERS)
    unknown = [n for n in planners if n not in PLANNERS]
    if unknown:
        raise InvalidArgument(f"--planners: unknown planner {unknown[0]!r}; choose from {','.join(PLANNERS)}")
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    rows = []
    for scenario in scenarios:
        rows += simulate(scenario, args.ranks, args.regions, args.shards, steps=args.steps,
                         horizon=args.horizon, seed=args.seed, planners=planners)
    print(f"hpccloud simulate: {args.ranks} ranks, {args.regions} regions, {args.shards} shards, "
          f"horizon {args.horizon} steps, seed {args.seed} (synthetic speeds and links)")
    print(format_table(rows))
    if args.json:
        write_json_atomic(args.json, rows)
    return 0
