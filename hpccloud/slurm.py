"""Slurm facts hpccloud checks at start-up.

The one trap worth a check of its own: ``srun`` without a PMI plugin (``--mpi=none``,
or a site whose ``MpiDefault`` is ``none``) starts N unrelated 1-rank MPI jobs
instead of one N-rank job; each would run the whole command alone and the step
would still exit 0. :func:`srun_without_pmi` recognises that from the
environment Slurm gives each task, so the CLI can stop with a message saying
how to launch instead.

Region mapping under Slurm needs no code here: each rank's node name is
``SLURMD_NODENAME`` (see :func:`hpccloud.topology.node_name`), matched against
the topology's ``hosts`` patterns (see ``slurm/regions.example.toml``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Set for a rank by a PMI-1/PMI-2 or PMIx launcher (srun --mpi=pmi2|pmix, Hydra, Open MPI).
_PMI_VARS = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")


def srun_without_pmi(world_size: int, environ: Mapping[str, str] | None = None) -> str | None:
    """A message if this process is one of several srun tasks that MPI sees as alone.

    >>> srun_without_pmi(1, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2"})[:38]
    'srun started 4 tasks, but MPI sees a w'
    >>> srun_without_pmi(4, {"SLURM_STEP_NUM_TASKS": "4", "PMI_RANK": "2"}) is None
    True
    """
    env = os.environ if environ is None else environ
    tasks = env.get("SLURM_STEP_NUM_TASKS", "")
    if world_size != 1 or not tasks.isdigit() or int(tasks) <= 1:
        return None
    if any(v in env for v in _PMI_VARS):
        return None
    return (f"srun started {tasks} tasks, but MPI sees a world of 1 rank in each: the step "
            "has no PMI, so every task would run the whole job alone. Fix: launch with "
            "`srun --mpi=pmi2 ...` (or ask your site for MpiDefault=pmi2), or use "
            "`mpiexec -n $SLURM_NTASKS ...` inside the allocation")
