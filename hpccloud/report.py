"""The run report: its schema (built once, here), the summary, the progress line and the plots.

:func:`build_report` turns a finished job into the report dict (the same on
every rank; ``hpccloud run --json`` writes it); :func:`print_summary` prints it
for people; :class:`Progress` is rank 0's live line while the job runs;
:func:`write_plots` draws the link heat-map, the per-rank load before and after
and the step-time timeline (per rank pair and per rank up to
:data:`PER_RANK_PLOT_MAX_RANKS` ranks; above, where the report keeps no dense
link matrix, per region pair and as the spread over ranks). ``hpccloud report
r.json`` renders the summary and plots again from the JSON alone. Nothing here
talks MPI.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from hpccloud.errors import ConfigError

KIND = "hpccloud-run"
#: plots show every rank (link matrix per rank pair, a bar and a line per rank) up to this
#: many ranks: the report's link document holds the dense P × P view only that far
#: (``hpccloud.measure.links.DENSE_JSON_MAX_RANKS``)
PER_RANK_PLOT_MAX_RANKS = 256


def _fill_achieved(steps: list[dict[str, Any]], plans: list[dict[str, Any]]) -> None:
    """Each plan's achieved step time: the median step until the next plan."""
    for i, p in enumerate(plans):
        end = plans[i + 1]["after_step"] if i + 1 < len(plans) else None
        after = [s["step_s"] for s in steps
                 if s["step"] > p["after_step"] and (end is None or s["step"] <= end)]
        p["achieved_step_s_after"] = float(np.median(after)) if after else None


def overhead(steps: list[dict[str, Any]]) -> dict[str, float | None]:
    """Framework overhead per step: step time − the slowest rank's kernel time (medians)."""
    if not steps:
        return {"median_s": None, "fraction_of_step": None}
    over = np.array([s["step_s"] - max(s["busy_s"]) for s in steps])
    step = np.array([s["step_s"] for s in steps])
    return {"median_s": float(np.median(over)),
            "fraction_of_step": float(np.median(over / np.maximum(step, 1e-12)))}


def _busy_wall(steps: list[dict[str, Any]], size: int) -> np.ndarray:
    """Per rank: the kernels' wall time summed over the steps."""
    return np.array([s["busy_s"] for s in steps]).sum(axis=0) if steps else np.zeros(size)


def _busy_cpu(steps: list[dict[str, Any]], size: int) -> np.ndarray:
    """Per rank: the kernels' CPU time summed over the steps (wall time where not recorded)."""
    return (np.array([s.get("busy_cpu_s", s["busy_s"]) for s in steps]).sum(axis=0) if steps
            else np.zeros(size))


def core_busy(steps: list[dict[str, Any]], cores, size: int) -> np.ndarray:
    """Per rank: the time its kernels held its share of the cores over the run.

    A rank with cores of its own: its busy wall time. A rank that shares cores
    (``cores.oversubscribed``): its kernels' CPU time ÷ the cores it gets while
    its whole group computes (as :func:`~hpccloud.measure.cores.planner_rates`
    rates it). Short kernels of ranks on one core run one after another, so each
    rank's wall busy time is only its own CPU time: three balanced ranks on one
    core beside a rank alone on the other read 1.3, 1.3, 1.3 and 4 ms a step
    (max/mean 2.0) while each holds its share of a core for ~4 ms.

    >>> from hpccloud.measure.cores import CoreShares
    >>> cs = CoreShares.from_ranks(["a"] * 4, [{0}, {0}, {0}, {1}], [1] * 4)
    >>> st = [{"busy_s": [1.3, 1.3, 1.3, 4.0], "busy_cpu_s": [1.3, 1.3, 1.2, 3.9]}]
    >>> core_busy(st, cs, 4).round(2).tolist()
    [3.9, 3.9, 3.6, 4.0]
    """
    if not steps:
        return np.zeros(size)
    wall = _busy_wall(steps, size)
    cpu = _busy_cpu(steps, size)
    if cores is None:
        return wall
    over = cores.oversubscribed & (cpu > 0)
    return np.where(over, cpu / cores.cores_per_rank(), wall)


def busy_per_core(steps: list[dict[str, Any]], cores, size: int) -> np.ndarray:
    """The run's busy time on each core: how evenly the job kept the machine's cores busy.

    Ranks that share cores (``cores.oversubscribed``) pool them: each of the group's
    cores gets the group's kernel CPU time ÷ its cores, however the ranks split it
    among themselves (their steps wait for each other, so the core's total decides
    when the group is done, not the split; topo's gate counts it so where the waits
    sleep). A rank with cores of its own gives one entry per thread: its kernels'
    wall time. Without core figures (``cores`` None) every rank is a core. Where every
    rank is in one group (ranks not pinned, sharing all the node's cores) every core
    reads the same, which says nothing; the summary then leaves the line out.
    :func:`core_busy` keeps the split among core-mates; it reads high where a
    balanced core holds ranks of unequal work (stencil2d under topo, 3 ranks on
    one core and one on the other: 1.35 on the ranks' shares, 1.10 per core).

    >>> from hpccloud.measure.cores import CoreShares
    >>> cs = CoreShares.from_ranks(["a"] * 4, [{0}, {0}, {0}, {1}], [1] * 4)
    >>> st = [{"busy_s": [1.0, 2.0, 1.0, 4.0], "busy_cpu_s": [1.0, 2.0, 1.0, 3.9]}]
    >>> busy_per_core(st, cs, 4).round(2).tolist()  # core 0: 1 + 2 + 1 s; core 1: rank 3's wall
    [4.0, 4.0]
    """
    wall = _busy_wall(steps, size)
    if cores is None:
        return wall
    cpu = _busy_cpu(steps, size)
    over = np.asarray(cores.oversubscribed, bool)
    group = np.asarray(cores.group)
    out: list[float] = []
    done: set[int] = set()
    for r in range(size):
        if not over[r]:
            out += [float(wall[r])] * int(cores.threads[r])
        elif int(group[r]) not in done:
            done.add(int(group[r]))
            n = int(cores.group_cores[r])
            out += [float(cpu[group == group[r]].sum()) / n] * n
    return np.array(out, dtype=np.float64)


def _max_over_mean(x: np.ndarray) -> float | None:
    return float(x.max() / x.mean()) if x.size and x.mean() > 0 else None


def build_report(job, total_s: float, output: dict[str, Any] | None) -> dict[str, Any]:
    """The report of a finished job (see :mod:`hpccloud.runner`); JSON-able."""
    import msgspec

    from hpccloud.runner.calibrate import model_error

    _fill_achieved(job.steps, job.plans)
    busy = _busy_wall(job.steps, job.size)
    core = core_busy(job.steps, job.cores, job.size)
    per_core = busy_per_core(job.steps, job.cores, job.size)
    return {
        "kind": KIND,
        "run_id": job.run_id,
        "config": msgspec.to_builtins(job.cfg),
        "workload_params": job.wl.params,
        "topology": job.topology.to_json(),
        "ranks": job.size,
        "links": job.links.to_json(),
        "speed": job.speed.to_json(),
        "cores": job.cores.to_json(),
        "initial_placement": job.initial_placement,
        "transport_probe": None if job.transport_probe is None else job.transport_probe.to_json(),
        "restarted_from": job.restarted_from,
        "compile_s": job.compile_s,
        "setup_s": job.setup_s,
        "steps": job.steps,
        "plans": job.plans,
        "rebalances_deferred": list(job.deferred),
        "checkpoints": job.checkpoints,
        "audit": job.audit,
        "total_s": total_s,
        "overhead_per_step": overhead(job.steps),
        "model_error": model_error(job.plans),
        "calibration": job.calibrator.calibration.to_json() if job.cfg.calibrate else None,
        "busy_s_per_rank": busy.tolist(),
        "busy_max_over_mean": _max_over_mean(busy),
        "core_busy_s_per_rank": core.tolist(),
        "core_busy_max_over_mean": _max_over_mean(core),
        "busy_s_per_core": per_core.tolist(),
        "busy_per_core_max_over_mean": _max_over_mean(per_core),
        "bytes_moved": int(sum(p.get("moved_bytes", 0) for p in job.plans)),
        "cross_region_bytes": int(sum(p.get("cross_region_bytes", 0) for p in job.plans)),
        "summary": job.wl.summary(),
        "output": output,
        "final_owners": job.shard_map.owners().tolist(),
    }


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        inner = f"×{len(value[0])}" if value and isinstance(value[0], list) else ""
        return f"[{len(value)}{inner} array in the JSON report]"
    return str(value)


def print_summary(rep: dict[str, Any], out=None) -> None:
    """Print a report for people (rank 0 after a run; ``hpccloud report`` from the JSON)."""
    out = out or sys.stdout

    def say(line: str) -> None:
        print(line, file=out)

    steps = rep["steps"]
    step_ms = np.array([s["step_s"] for s in steps]) * 1e3 if steps else np.zeros(1)
    cfg = rep["config"]
    say(f"hpccloud run: workload {cfg['workload']} on {rep['ranks']} ranks "
        f"({', '.join(sorted(set(r['region'] for r in rep['topology']['ranks'])))}), "
        f"balancer {cfg['balancer']}")
    rs = rep.get("restarted_from")
    if rs:
        say(f"  restarted from {rs['checkpoint']} (step {rs['step']}, written by "
            f"{rs['ranks_before']} ranks) in {rs['seconds']:.2f} s")
    say(f"  steps {len(steps)}, total {rep['total_s']:.2f} s, step time median "
        f"{np.median(step_ms):.2f} ms (min {step_ms.min():.2f}, max {step_ms.max():.2f})")
    ov = rep.get("overhead_per_step") or {}
    if ov.get("median_s") is not None:
        say(f"  framework overhead per step (step − slowest rank's kernels): median "
            f"{ov['median_s'] * 1e3:.2f} ms, {ov['fraction_of_step'] * 100:.0f} % of the step")
    me = rep.get("model_error") or {}
    if me.get("plans_compared"):
        def pct(x):
            return "—" if x is None else f"{x * 100:.0f} %"
        say(f"  model error (median |predicted − achieved| / achieved over {me['plans_compared']} "
            f"plans after the first): step {pct(me['step'])}, migration {pct(me['migration'])}, "
            f"rebalance wall {pct(me['rebalance_wall'])}")
    if rep["busy_max_over_mean"] is not None:
        say(f"  busy time per rank [s]: {', '.join(f'{b:.3f}' for b in rep['busy_s_per_rank'])}; "
            f"max/mean {rep['busy_max_over_mean']:.3f}")
    if rep.get("core_busy_max_over_mean") is not None and rep["core_busy_s_per_rank"] != rep["busy_s_per_rank"]:
        say(f"  ... on each rank's share of the cores (CPU time / cores where ranks share them) [s]: "
            f"{', '.join(f'{b:.3f}' for b in rep['core_busy_s_per_rank'])}; "
            f"max/mean {rep['core_busy_max_over_mean']:.3f}")
    if (rep.get("busy_per_core_max_over_mean") is not None
            and rep["busy_s_per_core"] != rep["core_busy_s_per_rank"]
            and len(set((rep.get("cores") or {}).get("group") or [0])) > 1):  # one group: all alike
        say(f"  ... per core (ranks that share cores pooled: their CPU time / their cores) [s]: "
            f"{', '.join(f'{b:.3f}' for b in rep['busy_s_per_core'])}; "
            f"max/mean {rep['busy_per_core_max_over_mean']:.3f}")
    ip = rep.get("initial_placement")
    if ip:
        say(f"  initial placement ({ip['seconds']:.2f} s, speed probe + plan): "
            f"{ip['n_placed_off_even']} shards placed off the even split, imbalance "
            f"{ip['imbalance_before']:.2f} -> {ip['imbalance_after']:.2f}, predicted step "
            f"{ip['makespan_before_s'] * 1e3:.2f} -> {ip['makespan_after_s'] * 1e3:.2f} ms")
    for p in rep["plans"]:
        achieved = p.get("achieved_step_s_after")
        say(f"  after step {p['after_step'] + 1:>4}: imbalance {p['imbalance_before']:.2f} -> "
            f"{p['imbalance_after']:.2f}, {len(p['moves'])} moves, "
            f"{p.get('moved_bytes', 0) / 1e6:.1f} MB moved; step time predicted "
            f"{p['makespan_after_s'] * 1e3:.2f} ms, achieved "
            f"{'—' if achieved is None else f'{achieved * 1e3:.2f} ms'}"
            f"{'' if p['gate_passed'] else f' ({_gate_words(p)})'}")
    est = next((p["rate_estimate"] for p in reversed(rep["plans"]) if p.get("rate_estimate")), None)
    if est and est.get("prior") and est.get("noise") is not None:
        say(f"  rank speeds planned on: the windows' deviations from the speed probe's kept at "
            f"{est['shrink']:.2f} (window-to-window scatter {est['noise'] * 100:.0f} %, "
            f"{est['windows']} windows; 1 keeps the newest window as measured)")
    say(f"  bytes moved {rep['bytes_moved'] / 1e6:.1f} MB "
        f"({rep['cross_region_bytes'] / 1e6:.1f} MB across regions)")
    if rep["summary"]:
        say(f"  result: {', '.join(f'{k} {_short(v)}' for k, v in rep['summary'].items())}")
    if rep.get("output"):
        say(f"  output: {rep['output']['catalogue']}")


def _info(line: str) -> None:
    """A progress line through the ``hpccloud.progress`` logger once the CLI set logging up
    (:mod:`hpccloud.log`: level, rank 0, per-rank files); printed as before otherwise."""
    import logging

    from hpccloud.log import get_logger

    if get_logger().handlers:
        logging.getLogger("hpccloud.progress").info(line)
    else:
        print(line, flush=True)


def _gate_words(p: dict) -> str:
    """What the gate said of plan ``p`` (the baselines move whatever it says: they ignore it),
    and over how many steps it weighed the saving (``horizon_steps``, where recorded).

    >>> _gate_words({"gate_passed": False, "moves": [], "horizon_steps": 57})
    'gate closed over 57 steps: no move'
    >>> _gate_words({"gate_passed": False, "moves": [[3, 0, 1]]})  # greedy moved 1 shard
    'gate would close; the baseline moves anyway'
    """
    h = p.get("horizon_steps")
    over = f" over {h} steps" if h else ""
    if p["gate_passed"]:
        return f"gate passed{over}"
    return (f"gate closed{over}: no move" if not p["moves"]
            else f"gate would close{over}; the baseline moves anyway")


class Progress:
    """Rank 0's progress: a live line with ETA on a terminal, plain log lines otherwise."""

    def __init__(self, enabled: bool, steps: int, start: int):
        self.enabled, self.steps, self.start = enabled, steps, start
        self.tty = enabled and sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self.every = max(1, (steps - start) // 10)

    def update(self, step: int, step_s: float) -> None:
        if not self.enabled:
            return
        done = step + 1 - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.steps - step - 1)
        line = f"step {step + 1}/{self.steps}  {step_s * 1e3:8.2f} ms/step  ETA {eta:6.1f} s"
        if self.tty:
            sys.stdout.write("\r" + line)
            sys.stdout.flush()
        elif done % self.every == 0 or step + 1 == self.steps:
            _info(line)

    def log(self, p: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stdout.write("\n")
        _info(f"rebalance after step {p['after_step'] + 1}: {p['planner']}: predicted makespan "
              f"{p['makespan_before_s'] * 1e3:.2f} -> {p['makespan_after_s'] * 1e3:.2f} ms, "
              f"imbalance {p['imbalance_before']:.2f} -> {p['imbalance_after']:.2f}, "
              f"{len(p['moves'])} moves, {p.get('moved_bytes', 0) / 1e6:.1f} MB "
              f"({_gate_words(p)})")

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


#: the largest report this reads (a report of 10^5 ranks is tens of MiB)
REPORT_MAX_BYTES = 1 << 30


def load_report(path: str) -> dict[str, Any]:
    """Read a ``hpccloud run --json`` report (one ConfigError naming the file otherwise)."""
    import json

    from hpccloud.io.small import read_regular

    fix = "pass the file written by `hpccloud run --json`"
    raw = read_regular(path, REPORT_MAX_BYTES, "run report", fix)
    if len(raw) > REPORT_MAX_BYTES:
        raise ConfigError(f"{path}: over {REPORT_MAX_BYTES >> 20} MiB: not a run report. Fix: {fix}")
    try:
        rep = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc}). Fix: {fix}") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply. Fix: {fix}") from None
    if not isinstance(rep, dict) or rep.get("kind") != KIND:
        kind = rep.get("kind") if isinstance(rep, dict) else None
        raise ConfigError(f"{path}: not a run report (kind {kind!r}). Fix: pass the file written "
                          "by `hpccloud run --json`")
    return rep


def _matrix(rows) -> np.ndarray:
    return np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=float)


def _link_matrices(links: dict[str, Any], ranks: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(α [s], β [bytes/s], "rank" | "region")`` matrices for ``links.png``.

    Per ordered rank pair when the link document has the dense view (``alpha_s``,
    ``beta_bytes_per_s``: up to 256 ranks) and the run is small enough to read it;
    otherwise per ordered region pair: the median over the measured rank pairs
    (``pairs``) between those regions, NaN (blank) where none was measured.

    >>> a, b, unit = _link_matrices({"size": 3, "rank_region": [0, 0, 1],
    ...     "pairs": [[0, 1, 1e-6, 1e10], [0, 2, 3e-5, 1e8], [1, 2, 5e-5, 3e8]]}, 3)
    >>> unit, a.tolist(), b[0].tolist()
    ('region', [[1e-06, 4e-05], [nan, nan]], [10000000000.0, 200000000.0])
    """
    if ranks <= PER_RANK_PLOT_MAX_RANKS and "alpha_s" in links and "beta_bytes_per_s" in links:
        return _matrix(links["alpha_s"]), _matrix(links["beta_bytes_per_s"]), "rank"
    try:
        region = np.asarray(links.get("rank_region") or np.zeros(ranks), dtype=np.int64)
        rows = np.array([[np.nan if x is None else x for x in row] for row in links.get("pairs") or []],
                        dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"links: rank_region/pairs are malformed ({exc}). Fix: pass the JSON "
                          "written by `hpccloud run --json`") from None
    G = int(region.max()) + 1 if region.size else 1
    alpha = np.full((G, G), np.nan)
    beta = np.full((G, G), np.nan)
    src, dst = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    ok = (src >= 0) & (src < region.size) & (dst >= 0) & (dst < region.size)
    rows, src, dst = rows[ok], src[ok], dst[ok]
    key = region[src] * G + region[dst]
    order = np.argsort(key, kind="stable")
    key, rows = key[order], rows[order]
    if key.size == 0:
        return alpha, beta, "region"
    bounds = np.flatnonzero(np.diff(key)) + 1
    for k, part in zip(key[np.concatenate([[0], bounds])], np.split(rows, bounds), strict=True):
        for out, col in ((alpha, 2), (beta, 3)):
            vals = part[:, col][np.isfinite(part[:, col])]
            if vals.size:
                out.flat[k] = float(np.median(vals))
    return alpha, beta, "region"


def write_plots(rep: dict, folder: str) -> list[str]:
    """Write the report's PNG plots into ``folder``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpccloud.io.atomic import atomic_path

    try:
        steps = rep["steps"]
        links = rep["links"]
        ranks = rep["ranks"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not a run report: missing {exc}. Fix: pass the JSON written by "
                          "`hpccloud run --json`") from None
    os.makedirs(folder, exist_ok=True)
    paths = []

    def save(fig, name):
        path = os.path.join(folder, name)
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        paths.append(path)

    # link heat-map: measured bandwidth and latency per ordered rank pair (or region pair, see
    # _link_matrices)
    per_rank = ranks <= PER_RANK_PLOT_MAX_RANKS
    alpha, beta, unit = _link_matrices(links, ranks)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, m, title in ((axes[0], beta * 1e-9, "bandwidth β [GB/s]"), (axes[1], alpha * 1e6, "latency α [µs]")):
        im = ax.imshow(m, cmap="viridis")
        if unit == "rank":
            ax.set_title(f"{title} ({links.get('provenance', '?')})")
        else:
            ax.set_title(f"{title} ({links.get('provenance', '?')}, median per region pair)", fontsize=9)
        ax.set_xlabel(f"receiver {unit}")
        ax.set_ylabel(f"sender {unit}")
        if m.shape[0] <= 64:
            ax.set_xticks(range(m.shape[0]))
            ax.set_yticks(range(m.shape[0]))
        fig.colorbar(im, ax=ax, shrink=0.8)
    save(fig, "links.png")

    # per-rank load before the first and after the last rebalance
    busy = np.array([s["busy_s"] for s in steps])
    plans = rep.get("plans", [])
    first = [s for s in steps if not plans or s["step"] <= plans[0]["after_step"]]
    last = [s for s in steps if plans and s["step"] > plans[-1]["after_step"]] or steps[-len(first):]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(ranks)
    before = np.mean([s["busy_s"] for s in first], axis=0) * 1e3
    after = np.mean([s["busy_s"] for s in last], axis=0) * 1e3
    if per_rank:
        ax.bar(x - 0.2, before, 0.4, label="before first rebalance")
        ax.bar(x + 0.2, after, 0.4, label="after last rebalance")
        ax.set_xticks(x)
    else:  # thousands of bars draw as noise (and slowly): one line each
        ax.plot(x, before, lw=0.6, label="before first rebalance")
        ax.plot(x, after, lw=0.6, label="after last rebalance")
    ax.set_xlabel("rank")
    ax.set_ylabel("busy time per step [ms]")
    ax.set_title(f"per-rank load ({rep['config']['balancer']})")
    ax.legend()
    save(fig, "load.png")

    # step-time timeline with rebalances marked, and each rank's busy time
    fig, ax = plt.subplots(figsize=(9, 4))
    st = np.array([s["step"] for s in steps])
    ax.plot(st, [s["step_s"] * 1e3 for s in steps], "k-", lw=2, label="step time")
    if per_rank:
        for r in range(ranks):
            ax.plot(st, busy[:, r] * 1e3, lw=0.8, alpha=0.8, label=f"rank {r} busy")
    else:  # the spread over ranks instead of a line per rank
        ax.fill_between(st, busy.min(axis=1) * 1e3, busy.max(axis=1) * 1e3, alpha=0.3,
                        label=f"busy, min–max over {ranks} ranks")
        ax.plot(st, np.median(busy, axis=1) * 1e3, lw=0.8, label="busy, median rank")
    for p in plans:
        ax.axvline(p["after_step"] + 0.5, color="red", ls="--", lw=0.8)
        ax.plot([p["after_step"] + 1], [p["makespan_after_s"] * 1e3], "rv")
    ax.set_xlabel("step")
    ax.set_ylabel("ms")
    ax.set_title("step time (red: rebalances, ▼ predicted step time)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, "timeline.png")

    # the model against the run: predicted vs achieved at every plan
    if plans:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        at = [p["after_step"] + 1 for p in plans]
        for ax, (pred, ach, title) in zip(axes, (
                ("makespan_after_s", "achieved_step_s_after", "step time"),
                ("migration_s", "achieved_migration_s", "migration"),
                ("predicted_rebalance_wall_s", "rebalance_wall_s", "rebalance wall time")),
                strict=True):
            def ms(key):
                return [np.nan if p.get(key) is None else p[key] * 1e3 for p in plans]
            ax.plot(at, ms(pred), "o--", label="predicted")
            ax.plot(at, ms(ach), "s-", label="achieved")
            ax.set_xlabel("rebalance after step")
            ax.set_ylabel("ms")
            ax.set_title(title)
            ax.legend(fontsize=7)
        fig.suptitle("the calibrated model against the run")
        save(fig, "model.png")
    return paths
