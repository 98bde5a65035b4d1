"""Plots of a run report: link heat-map, per-rank load before and after, step-time timeline.

``hpccloud run --json r.json --plots DIR`` writes them after a run;
``hpccloud report r.json --out DIR`` renders them again from the JSON alone.
"""

from __future__ import annotations

import os

import numpy as np

from hpccloud.errors import ConfigError


def _matrix(rows) -> np.ndarray:
    return np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=float)


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

    # link heat-map: measured bandwidth and latency per ordered rank pair
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, scale, title in ((axes[0], "beta_bytes_per_s", 1e-9, "bandwidth β [GB/s]"),
                                  (axes[1], "alpha_s", 1e6, "latency α [µs]")):
        m = _matrix(links[key]) * scale
        im = ax.imshow(m, cmap="viridis")
        ax.set_title(f"{title} ({links.get('provenance', '?')})")
        ax.set_xlabel("receiver rank")
        ax.set_ylabel("sender rank")
        ax.set_xticks(range(ranks))
        ax.set_yticks(range(ranks))
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
    ax.bar(x - 0.2, before, 0.4, label="before first rebalance")
    ax.bar(x + 0.2, after, 0.4, label="after last rebalance")
    ax.set_xlabel("rank")
    ax.set_ylabel("busy time per step [ms]")
    ax.set_title(f"per-rank load ({rep['config']['balancer']})")
    ax.set_xticks(x)
    ax.legend()
    save(fig, "load.png")

    # step-time timeline with rebalances marked, and each rank's busy time
    fig, ax = plt.subplots(figsize=(9, 4))
    st = np.array([s["step"] for s in steps])
    ax.plot(st, [s["step_s"] * 1e3 for s in steps], "k-", lw=2, label="step time")
    for r in range(ranks):
        ax.plot(st, busy[:, r] * 1e3, lw=0.8, alpha=0.8, label=f"rank {r} busy")
    for p in plans:
        ax.axvline(p["after_step"] + 0.5, color="red", ls="--", lw=0.8)
        ax.plot([p["after_step"] + 1], [p["makespan_after_s"] * 1e3], "rv")
    ax.set_xlabel("step")
    ax.set_ylabel("ms")
    ax.set_title("step time (red: rebalances, ▼ predicted step time)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, "timeline.png")
    return paths
