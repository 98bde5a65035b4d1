"""Topology loading under real mpiexec: same result, same errors, on every rank."""

import pytest

from hpccloud.comm.topology import load_topology
from hpccloud.errors import TopologyError


@pytest.mark.hpccloud_mpi(ranks=[1, 2, 3, 4], timeout=60)
def test_load_topology_collective(comm):
    topo = load_topology(None, comm)
    assert topo.size == comm.Get_size()
    # every rank resolved the same map
    maps = comm.allgather(topo.rank_region)
    assert all(m == maps[0] for m in maps)
    assert set(topo.rank_region) <= {"eu-north", "us-east"}


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=60)
def test_bad_file_same_error_everywhere(comm, tmp_path_factory):
    path = None
    if comm.Get_rank() == 0:
        path = tmp_path_factory.mktemp("t") / "bad.toml"
        path.write_text('[[regions]]\nname = "a"\njurisdiction = "EU"\nprice_per_core_hour = 1\nranks = [0]\n')
    path = comm.bcast(str(path) if path else None)
    with pytest.raises(TopologyError) as info:
        load_topology(path, comm)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1
    assert "not mapped" in messages[0] and "bad.toml" in messages[0]
