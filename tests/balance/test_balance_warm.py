"""warm_planner loads every compiled helper a run's plans use (checked in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpccloud.errors import InvalidArgument

CHILD = r"""
import json, numpy as np
from numba.core.registry import CPUDispatcher
import hpccloud.balance.chains, hpccloud.balance.metis, hpccloud.balance.model
import hpccloud.balance.planners, hpccloud.measure.levels, hpccloud.balance.local
from hpccloud.balance import PlanOptions, plan_problem
from hpccloud.balance.calibration import Calibration
from hpccloud.balance.scenarios import make_problem
from hpccloud.balance.warm import warm_planner

mods = [hpccloud.balance.chains, hpccloud.balance.metis, hpccloud.balance.model,
        hpccloud.balance.planners, hpccloud.measure.levels, hpccloud.balance.local]
def loaded():
    return {f"{m.__name__}.{n}": len(o.signatures) for m in mods for n, o in vars(m).items()
            if isinstance(o, CPUDispatcher)}
before = loaded()
seconds = warm_planner(PLANNER)
warm = loaded()
# a run's plans: another layout, more ranks and shards, calibrated, with last window's work
p = make_problem("drift", 6, 3, 90, seed=3)
cal = Calibration(step_fixed_s=5e-4, per_shard_s=3e-4, compute_scale=1.1, rank_host=(0, 0, 0, 1, 1, 2))
for c in (None, cal):
    for h in (3, 60):
        plan_problem(p, PLANNER, PlanOptions(horizon_steps=h, calibration=c, recent_work=(p.work_units[::-1].copy(),)))
after = loaded()
print(json.dumps({"seconds": seconds, "before": sum(before.values()), "warm": sum(warm.values()),
                  "new": {k: after[k] - warm[k] for k in after if after[k] != warm[k]}}))
"""


@pytest.mark.parametrize("planner", ["topo", "static", "even"])
def test_warm_planner_loads_what_a_runs_plans_use(planner):
    # static and even move nothing, but every rebalance prices their plan on the same model
    child = CHILD.replace("PLANNER", repr(planner))
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    # a fresh process; the helpers loaded (topo's dozen; the model's for the others)
    assert got["before"] == 0 and got["warm"] >= (10 if planner == "topo" else 2)
    assert got["new"] == {}, got["new"]  # nothing left for the run's first plan to load
    assert got["seconds"] > 0


def test_warm_planner_names_an_unknown_planner():
    from hpccloud.balance.warm import warm_planner

    with pytest.raises(InvalidArgument, match="unknown planner 'nope'"):
        warm_planner("nope")
