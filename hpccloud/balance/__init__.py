"""The topology-aware load balancer: pure planners, a lower bound, a migration gate.

Nothing here imports MPI: a plan is a function of arrays, so the same code runs
inside the step loop, in ``hpccloud plan`` (a dry run on a measured profile) and
in ``hpccloud simulate`` (10^5 shards × 10^3 ranks in one process).

>>> import numpy as np
>>> from hpccloud.balance import Problem, plan_problem
>>> p = Problem.uniform(work_units=np.ones(6), owners=[0, 0, 0, 0, 1, 1], speed_units_per_s=[1.0, 2.0])
>>> mp = plan_problem(p, "topo")
>>> mp.owners_after.tolist(), mp.lower_bound_s
([0, 0, 1, 1, 1, 1], 2.0)
"""

from __future__ import annotations

from hpccloud.balance.bound import lower_bound_s
from hpccloud.balance.planners import PLANNERS, MigrationPlan, PlanOptions, plan_problem
from hpccloud.balance.problem import Problem, problem_from

__all__ = ["PLANNERS", "MigrationPlan", "PlanOptions", "Problem", "lower_bound_s", "plan",
           "plan_problem", "problem_from"]


def plan(shard_map, link_model, speed_model, policy, options: PlanOptions | None = None,
         planner: str = "topo", *, kernel: str | None = None) -> MigrationPlan:
    """Plan a rebalance of ``shard_map`` on the measured models (pure: no MPI).

    Parameters
    ----------
    shard_map, link_model, speed_model, policy : the runtime objects (:class:`~hpccloud.shards.ShardMap`,
        :class:`~hpccloud.measure.links.LinkModel`, :class:`~hpccloud.measure.speed.SpeedModel`,
        :class:`~hpccloud.policy.Policy`).
    options : :class:`PlanOptions` (horizon for the gate, tolerance, ...).
    planner : one of :data:`PLANNERS` — ``"topo"`` (default), ``"greedy"``, ``"even"``, ``"static"``.
    kernel : whose measured speed to use (default: the speed model's reference kernel).
    """
    return plan_problem(problem_from(shard_map, link_model, speed_model, policy, kernel=kernel),
                        planner, options)
