"""``hpccloud supervise -- LAUNCHER ... hpccloud run ...``: relaunch a failed job from its checkpoints.

    hpccloud supervise --max-restarts 3 -- mpiexec -n 4 hpccloud run \\
        --checkpoint-every 10 --checkpoint-dir ckpt/ --json report.json
    # inside a Slurm allocation (sbatch script):
    hpccloud supervise -- srun --mpi=pmi2 hpccloud run --checkpoint-every 10 --checkpoint-dir ckpt/

See :mod:`hpccloud.supervise`. The supervisor itself starts no MPI: it runs in
the batch script (or on a login node), the launcher starts the ranks.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("supervise", help="run a job; after a rank dies or stalls, relaunch it from "
                       "its newest verified checkpoint")
    p.add_argument("--max-restarts", type=int, default=3, metavar="R",
                   help="relaunch at most R times (default 3)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="where the job's checkpoints are (default: the command's --checkpoint-dir)")
    p.add_argument("--key-file", default=None, metavar="FILE",
                   help="verify the manifests' HMAC with this key (default: the command's --key-file)")
    p.add_argument("--exclude-region", action="append", default=[], metavar="NAME",
                   help="relaunch without this region: the launcher's rank count drops by its ranks "
                        "and the run drops it from its topology (repeatable)")
    p.add_argument("--ranks-after", type=int, default=None, metavar="M",
                   help="with --exclude-region: the launcher's new rank count (default: computed "
                        "from the topology's explicit or even rank lists)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="give up after S seconds in all (the job is killed; exit 124)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the launch command, after --")
    p.set_defaults(run=run)


def _ranks_after(cmd: list[str], exclude: list[str]) -> int:
    from hpccloud.errors import InvalidArgument
    from hpccloud.supervise import command_value, launcher_ranks
    from hpccloud.topology import node_name, read_topology_text, topology_from_text

    _, n = launcher_ranks(cmd)
    if n is None:
        raise InvalidArgument("supervise --exclude-region: cannot find the launcher's rank count "
                              "(-n N / --ntasks N). Fix: give --ranks-after M")
    topo = topology_from_text(*read_topology_text(command_value(cmd, "--topology")), n, [node_name()] * n)
    for name in exclude:
        if name not in topo.region_names:
            raise InvalidArgument(f"supervise --exclude-region {name}: unknown region. Fix: use one "
                                  f"of {list(topo.region_names)}")
    return n - sum(len(topo.ranks_in(name)) for name in exclude)


def run(args) -> int:
    from hpccloud.errors import InvalidArgument
    from hpccloud.supervise import command_value, supervise

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise InvalidArgument("supervise: no command. Fix: hpccloud supervise -- mpiexec -n 4 "
                              "hpccloud run --checkpoint-every 10 --checkpoint-dir ckpt/")
    if args.max_restarts < 0:
        raise InvalidArgument(f"--max-restarts must be >= 0, got {args.max_restarts}")
    key_file = args.key_file or command_value(cmd, "--key-file")
    key = None
    if key_file:
        from hpccloud.keys import load_key

        key = load_key(key_file)
    ranks_after = args.ranks_after
    if args.exclude_region and ranks_after is None:
        ranks_after = _ranks_after(cmd, args.exclude_region)
    if ranks_after is not None and ranks_after < 1:
        raise InvalidArgument(f"supervise --exclude-region {args.exclude_region}: no rank would be "
                              "left. Fix: exclude fewer regions")
    code, _ = supervise(cmd, max_restarts=args.max_restarts, checkpoint_dir=args.checkpoint_dir,
                        key=key, exclude_regions=args.exclude_region, ranks_after_exclude=ranks_after,
                        timeout_s=args.timeout, log=lambda m: print(m, flush=True))
    return code
