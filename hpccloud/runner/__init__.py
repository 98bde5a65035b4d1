"""The job: named stages under a thin loop.

=====================  =========================================================
``options``            :class:`RunConfig` — flags, TOML keys and validation, one definition
``setup``              :class:`Job` and :func:`prepare`: models, placement, data or restart
``residency``          effective halo classes, where data (re)starts, what a rank may hold
``step``               one timed step: halo exchange, kernels, one sleeping sync
``window``             what the steps since the last rebalance measured
``rebalance``          models from the window, the plan, the moves
``checkpointing``      checkpoint and restart (any rank count, any topology)
``publish``            HDF5 per region + catalogue
``loop``               the loop; :func:`run` = prepare ─ loop ─ publish ─ report
=====================  =========================================================

The report itself (schema, summary, progress, plots) lives in :mod:`hpccloud.report`.
Every function that takes a job or ``comm`` is collective: all ranks call it.
"""

from hpccloud.runner.loop import next_rebalance, run
from hpccloud.runner.options import RunConfig
from hpccloud.runner.residency import halo_closed, place_resident

__all__ = ["RunConfig", "halo_closed", "next_rebalance", "place_resident", "run"]
