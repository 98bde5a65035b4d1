"""Slurm pieces that need no cluster: the no-PMI check and the example node mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpccloud.errors import TopologyError
from hpccloud.slurm import srun_without_pmi
from hpccloud.topology import read_topology_text, topology_from_text

EXAMPLE = Path(__file__).resolve().parents[2] / "slurm" / "regions.example.toml"


@pytest.mark.parametrize(("size", "env", "trapped"), [
    # srun --mpi=none: every task is a 1-rank world, no PMI variables
    (1, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"}, True),
    # srun --mpi=pmi2, or Hydra inside the allocation: a real world
    (4, {"SLURM_STEP_NUM_TASKS": "4", "PMI_RANK": "3", "PMI_SIZE": "4"}, False),
    (4, {"SLURM_STEP_NUM_TASKS": "1", "PMI_RANK": "3", "PMI_FD": "6"}, False),
    # a deliberate 1-rank launch under srun, and no Slurm at all
    (1, {"SLURM_STEP_NUM_TASKS": "1"}, False),
    (1, {}, False),
    # Hydra run with -n 1 inside a 2-task step: PMI says so
    (1, {"SLURM_STEP_NUM_TASKS": "2", "PMI_RANK": "0", "PMI_SIZE": "1"}, False),
    (1, {"SLURM_STEP_NUM_TASKS": "2", "PMIX_RANK": "0"}, False),
])
def test_srun_without_pmi(size, env, trapped):
    msg = srun_without_pmi(size, env)
    assert (msg is not None) == trapped, msg
    if trapped:
        assert "srun --mpi=pmi2" in msg and env["SLURM_STEP_NUM_TASKS"] in msg


def _example(size, hosts):
    text, source = read_topology_text(EXAMPLE)
    return topology_from_text(text, source, size, hosts)


def test_example_maps_ranks_by_node_name():
    # 2 nodes x 3 tasks, block placement as Slurm's default distribution gives it
    hosts = ["eu-node007"] * 3 + ["us-node12"] * 3
    topo = _example(6, hosts)
    assert topo.rank_region == ("eu-north",) * 3 + ("us-east",) * 3
    assert topo.ranks_in("us-east") == (3, 4, 5)


def test_example_rejects_a_node_it_does_not_know():
    with pytest.raises(TopologyError, match=r"ranks \[1\] are not mapped.*login1"):
        _example(3, ["eu-node001", "login1", "us-node001"])


def test_example_host_list_range_is_exact():
    # eu-node[001-128]: 129 is outside the range, so the rank is unmapped
    with pytest.raises(TopologyError, match="eu-node129"):
        _example(2, ["eu-node129", "us-node001"])


def test_cluster_tests_say_why_they_cannot_run(monkeypatch):
    import minislurm

    monkeypatch.setattr(minislurm.os, "geteuid", lambda: 1000)
    assert "not running as root" in minislurm.cannot_run_reason()
    monkeypatch.setattr(minislurm.os, "geteuid", lambda: 0)
    monkeypatch.setattr(minislurm, "_which", lambda name: None)
    assert "apt-get is unavailable" in minislurm.cannot_run_reason()
