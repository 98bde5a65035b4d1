"""Load a planner's compiled helpers before the run needs them.

The planners' inner loops are Numba functions cached on disk; the first call of
each in a process loads it (LLVM parses and links the cached code): ~3-9 ms a
function, ~40-60 ms for ``topo``'s dozen when they come one by one inside the
first calibrated rebalance of a run, where they made a no-move plan cost 45 ms
instead of 2-10 ms. :func:`warm_planner` makes those first calls on a small
synthetic two-region problem, uncalibrated and calibrated, so that every
compiled path the run's plans take is loaded (the job's rank 0 does this while
the other ranks load the workload's kernel from the cache: see
:func:`hpccloud.compile.warm_up`).

>>> seconds = warm_planner("topo")
>>> seconds >= 0.0
True
"""

from __future__ import annotations

import time

from hpccloud.balance.calibration import Calibration
from hpccloud.balance.planners import PLANNERS, PlanOptions, plan_problem
from hpccloud.errors import InvalidArgument


def warm_planner(planner: str) -> float:
    """Plan a small problem with ``planner`` every way a run does; return the seconds it took."""
    from hpccloud.balance.scenarios import make_problem

    if planner not in PLANNERS:
        raise InvalidArgument(f"unknown planner {planner!r}; choose one of {sorted(PLANNERS)}")
    t0 = time.perf_counter()
    p = make_problem("two-region-slow-link", ranks=4, regions=2, shards=32)
    cal = Calibration(step_fixed_s=1e-3, per_shard_s=1e-4, rank_host=(0, 0, 1, 1))
    for c in (None, cal):
        plan_problem(p, planner, PlanOptions(horizon_steps=50, calibration=c,
                                             recent_work=(p.work_units * 1.1,)))
    return time.perf_counter() - t0


__all__ = ["warm_planner"]
