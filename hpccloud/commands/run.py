"""``hpccloud run``: the main job — a sharded workload with live rebalancing.

With no arguments it runs the embedded default: the ``stencil2d`` workload with
a moving hot spot on the default two-region topology, rebalanced by ``topo``.
Settings come from ``--config FILE.toml`` and then from flags (flags win); every
flag is also a key of the config file (:mod:`hpccloud.runner.options`)::

    workload = "kmeans"
    steps = 40
    rebalance_every = 5
    balancer = "topo"
    [params]
    n = 200000
"""

from __future__ import annotations

from hpccloud.commands.common import add_topology_arg, world
from hpccloud.log import add_logging_args
from hpccloud.runner.options import add_arguments, config_from_args

#: environment variables that change what the ranks do together: every rank must see the same
#: (the residency check every step and synchronous checkpoints are collective; the
#: transport's verification decides what the sender sends)
JOB_ENV = ("HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP", "HPCCLOUD_SYNC_CHECKPOINTS", "HPCCLOUD_TRANSPORT_VERIFY")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a sharded workload with measured, residency-safe rebalancing")
    add_topology_arg(p)
    add_arguments(p)
    add_logging_args(p)
    p.set_defaults(run=run)


def build_config(args):
    """The RunConfig from ``--config`` and the flags (pure; raises on bad input)."""
    cfg = config_from_args(args)
    if cfg.key_file:
        from hpccloud.extras import require

        require("cryptography", "--key-file (AES-GCM sealing of cross-region moves)")
    return cfg


def settings_of(cfg, environ=None) -> dict:
    """The settings every rank must share: the config as the ranks resolved it, config file
    included, and the environment variables that change what the ranks do together
    (:data:`JOB_ENV`; set on one rank only, the job hung). ``threads`` may differ (nodes
    of different sizes, ``--threads`` per rank).

    >>> from hpccloud.runner.options import RunConfig
    >>> s = settings_of(RunConfig(steps=30, threads=2), {"HPCCLOUD_SYNC_CHECKPOINTS": "1"})
    >>> s["steps"], "threads" in s, s["HPCCLOUD_SYNC_CHECKPOINTS"], s["HPCCLOUD_TRANSPORT_VERIFY"]
    (30, False, '1', None)
    """
    import os

    import msgspec

    environ = os.environ if environ is None else environ
    out = msgspec.to_builtins(cfg)
    out.pop("threads", None)
    out.update({k: environ.get(k) for k in JOB_ENV})
    return out


def run(args) -> int:
    from hpccloud import log
    from hpccloud.comm.agree import agree, same_on_every_rank
    from hpccloud.comm.topology import load_topology
    from hpccloud.io.atomic import write_json_atomic
    from hpccloud.report import print_summary
    from hpccloud.runner import run as run_job
    from hpccloud.threads import configure_threads

    comm = world()
    agree(comm, lambda: log.setup(comm.Get_rank(), comm.Get_size(), log.verbosity_of(args),
                                  args.log_dir, args.log_all_ranks))
    cfg = agree(comm, lambda: build_config(args))
    same_on_every_rank(comm, "hpccloud run", {**settings_of(cfg), "topology": args.topology})
    topo = load_topology(args.topology, comm, exclude_regions=tuple(cfg.exclude_region))
    agree(comm, lambda: configure_threads(comm, cfg.threads))
    rep = run_job(comm, topo, cfg)
    log.flush_warnings(comm)
    if comm.Get_rank() == 0:
        print_summary(rep)
    if cfg.json:
        agree(comm, lambda: write_json_atomic(cfg.json, rep) if comm.Get_rank() == 0 else None)
    if cfg.plots:
        from hpccloud.report import write_plots

        agree(comm, lambda: write_plots(rep, cfg.plots) if comm.Get_rank() == 0 else None)
    return 0
