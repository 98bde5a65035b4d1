"""``hpccloud run``: the main job — a sharded workload with live rebalancing.

With no arguments it runs the embedded default: the ``stencil2d`` workload with
a moving hot spot on the default two-region topology, rebalanced by ``topo``.
Settings come from ``--config FILE.toml`` and then from flags (flags win)::

    workload = "kmeans"
    steps = 40
    rebalance_every = 5
    balancer = "topo"
    [params]
    n = 200000
"""

from __future__ import annotations

import argparse
import os
import tomllib

from hpccloud.commands.common import (
    add_threads_arg,
    add_topology_arg,
    check_writable,
    world,
    write_json_atomic,
)
from hpccloud.errors import ConfigError, InvalidArgument

_CONFIG_KEYS = {"workload", "steps", "rebalance_every", "first_rebalance", "initial_placement",
                "balancer", "seed", "params", "horizon_steps", "checkpoint_every", "checkpoint_dir"}


def add_parser(sub) -> None:
    from hpccloud.workloads import WORKLOADS

    BALANCERS = ("static", "even", "greedy", "topo")

    p = sub.add_parser("run", help="run a sharded workload with measured, residency-safe rebalancing")
    add_topology_arg(p)
    add_threads_arg(p)
    p.add_argument("--config", metavar="FILE", help="TOML with workload, steps, balancer, [params]")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default=None)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="workload parameter, e.g. --param n=4096 (repeatable)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rebalance-every", type=int, default=None, metavar="K",
                   help="rebalance every K steps (0: never)")
    p.add_argument("--first-rebalance", type=int, default=None, metavar="F",
                   help="also rebalance after the first F steps, as soon as they measured the "
                        "ranks (default: 3 when K >= 6; 0: only every K steps)")
    p.add_argument("--initial-placement", action=argparse.BooleanOptionalAction, default=None,
                   help="greedy/topo: place the shards by a short speed probe before creating "
                        "the data, so nothing has to move (default: on)")
    p.add_argument("--balancer", choices=BALANCERS, default=None)
    p.add_argument("--horizon", type=int, default=None, dest="horizon_steps", metavar="H",
                   help="steps a rebalance must pay off within (default: K)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--input", metavar="FILE.h5", help="read the initial array from HDF5")
    p.add_argument("--input-dataset", default="data", metavar="NAME")
    p.add_argument("--output", metavar="DIR", help="write one HDF5 file per region + catalogue.h5")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    p.add_argument("--restart", metavar="CKPT", help="resume from a checkpoint folder")
    p.add_argument("--backup-dir", action="append", default=[], metavar="REGION=PATH",
                   dest="backup_dirs",
                   help="also copy each checkpoint to PATH, storage in REGION: a rank file goes "
                        "there only if every data class in it may live in REGION (repeatable)")
    p.add_argument("--stall-timeout", type=float, default=None, metavar="S",
                   help="a rank that makes no progress for S seconds ends the job with exit code 75 "
                        "and a message naming it (default 60, and at least 10x the slowest step)")
    p.add_argument("--exclude-region", action="append", default=[], metavar="NAME",
                   dest="exclude_regions",
                   help="run without this region of the topology (e.g. after losing it; repeatable)")
    p.add_argument("--key-file", metavar="FILE", help="AES-GCM key: encrypt cross-region transfers")
    p.add_argument("--audit", metavar="FILE.jsonl", help="append an audit record per transfer")
    p.add_argument("--profile", metavar="PROBE.json",
                   help="use the links measured by `hpccloud probe --json` instead of a fresh probe")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots of the report here")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(run=run)


def _read_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}). Fix: check --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Fix: correct the syntax") from None
    extra = sorted(set(doc) - _CONFIG_KEYS)
    if extra:
        raise ConfigError(f"{path}: {extra[0]}: unknown key. Fix: use one of {sorted(_CONFIG_KEYS)}")
    if "params" in doc and not isinstance(doc["params"], dict):
        raise ConfigError(f"{path}: params: expected a table. Fix: write [params] with key = value")
    return doc


def _params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--param {item!r}: expected KEY=VALUE. Fix: e.g. --param n=4096")
        out[key.strip()] = value.strip()
    return out


def build_config(args):
    """The RunConfig from ``--config`` and the flags (pure; raises on bad input)."""
    from hpccloud.runner import RunConfig

    doc = _read_config(args.config)
    cfg = RunConfig()
    for key in ("workload", "steps", "rebalance_every", "first_rebalance", "initial_placement",
                "balancer", "seed", "horizon_steps", "checkpoint_every", "checkpoint_dir"):
        if key in doc:
            setattr(cfg, key, doc[key])
        flag = getattr(args, key, None)
        if flag is not None:
            setattr(cfg, key, flag)
    cfg.params = {**doc.get("params", {}), **_params(args.param)}
    for key in ("restart", "input", "input_dataset", "output", "key_file", "audit", "profile",
                "threads", "quiet", "stall_timeout"):
        setattr(cfg, key, getattr(args, key))
    cfg.backup_dirs = tuple(args.backup_dirs)
    cfg.exclude_regions = tuple(args.exclude_regions)
    for path_arg in ("input", "restart", "key_file", "profile"):
        path = getattr(cfg, path_arg)
        if path and not os.path.exists(path):
            raise InvalidArgument(f"--{path_arg.replace('_', '-')} {path}: no such file or folder. "
                                  "Fix: check the path")
    for out_arg in ("json", "audit"):
        if getattr(args, out_arg):
            check_writable(getattr(args, out_arg))
    cfg.validate()
    return cfg


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        inner = f"×{len(value[0])}" if value and isinstance(value[0], list) else ""
        return f"[{len(value)}{inner} array in the JSON report]"
    return str(value)


def print_summary(rep: dict) -> None:
    import numpy as np

    steps = rep["steps"]
    step_ms = np.array([s["step_s"] for s in steps]) * 1e3
    cfg = rep["config"]
    print(f"hpccloud run: workload {cfg['workload']} on {rep['ranks']} ranks "
          f"({', '.join(sorted(set(r['region'] for r in rep['topology']['ranks'])))}), "
          f"balancer {cfg['balancer']}")
    print(f"  steps {len(steps)}, total {rep['total_s']:.2f} s, step time median {np.median(step_ms):.2f} ms "
          f"(min {step_ms.min():.2f}, max {step_ms.max():.2f})")
    print(f"  busy time per rank [s]: {', '.join(f'{b:.3f}' for b in rep['busy_s_per_rank'])}; "
          f"max/mean {rep['busy_max_over_mean']:.3f}")
    ip = rep.get("initial_placement")
    if ip:
        print(f"  initial placement ({ip['seconds']:.2f} s, speed probe + plan): "
              f"{ip['n_placed_off_even']} shards placed off the even split, imbalance "
              f"{ip['imbalance_before']:.2f} -> {ip['imbalance_after']:.2f}, predicted step "
              f"{ip['makespan_before_s'] * 1e3:.2f} -> {ip['makespan_after_s'] * 1e3:.2f} ms")
    for p in rep["plans"]:
        achieved = p.get("achieved_step_s_after")
        print(f"  after step {p['after_step'] + 1:>4}: imbalance {p['imbalance_before']:.2f} -> "
              f"{p['imbalance_after']:.2f}, {len(p['moves'])} moves, "
              f"{p.get('moved_bytes', 0) / 1e6:.1f} MB moved; step time predicted "
              f"{p['makespan_after_s'] * 1e3:.2f} ms, achieved "
              f"{'—' if achieved is None else f'{achieved * 1e3:.2f} ms'}"
              f"{'' if p['gate_passed'] else ' (gate closed)'}")
    print(f"  bytes moved {rep['bytes_moved'] / 1e6:.1f} MB "
          f"({rep['cross_region_bytes'] / 1e6:.1f} MB across regions)")
    if rep["summary"]:
        print(f"  result: {', '.join(f'{k} {_short(v)}' for k, v in rep['summary'].items())}")
    if rep.get("output"):
        print(f"  output: {rep['output']['catalogue']}")


def run(args) -> int:
    from hpccloud.comm.agree import agree
    from hpccloud.runner import run as run_job
    from hpccloud.threads import configure_threads
    from hpccloud.topology import load_topology

    comm = world()
    cfg = agree(comm, lambda: build_config(args))
    topo = load_topology(args.topology, comm, exclude_regions=cfg.exclude_regions)
    agree(comm, lambda: configure_threads(comm, cfg.threads))
    rep = run_job(comm, topo, cfg)
    if comm.Get_rank() == 0:
        print_summary(rep)
    if args.json:
        agree(comm, lambda: write_json_atomic(args.json, rep) if comm.Get_rank() == 0 else None)
    if args.plots:
        from hpccloud.report import write_plots

        agree(comm, lambda: write_plots(rep, args.plots) if comm.Get_rank() == 0 else None)
    return 0
