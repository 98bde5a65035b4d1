"""Restart on other rank counts and other topologies, with residency checked at every step."""

import os
import sys

import numpy as np
import pytest

from hpccloud.comm.topology import load_topology
from hpccloud.io.hdf5 import read_catalogue
from hpccloud.runner import RunConfig, run
from hpccloud.testing.mpi_pytest import run_mpi

PARAMS = {"n": 96, "grid": 6, "hot_sweeps": 3, "period": 6}

SWAPPED = """
name = "swapped"
[[regions]]
name = "us-east"
jurisdiction = "US"
price_per_core_hour = 0.048
ranks = [0, 1]
[[regions]]
name = "eu-north"
jurisdiction = "EU"
price_per_core_hour = 0.032
ranks = "even"
[data_classes.public]
regions = ["*"]
aggregates_may_leave = true
[data_classes.eu-personal]
jurisdictions = ["EU"]
aggregates_may_leave = true
"""

EU_ONLY = """
name = "eu-only"
[[regions]]
name = "eu-north"
jurisdiction = "EU"
price_per_core_hour = 0.032
ranks = "even"
[data_classes.public]
regions = ["*"]
[data_classes.eu-personal]
jurisdictions = ["EU"]
"""

# eu-north is withdrawn: declared, but no rank of the job is there any more
WITHDRAWN = SWAPPED.replace("ranks = [0, 1]", "ranks = [0, 1, 2, 3]")


def _cfg(out, **kw):
    return RunConfig(workload="stencil2d", params=dict(PARAMS), steps=8, rebalance_every=2,
                     output=out, quiet=True, probe_sizes=(8, 4096), **kw)


@pytest.mark.hpccloud_mpi(ranks=[4], timeout=400)
def test_restart_on_other_rank_counts_and_topologies_equals_uninterrupted(
        comm, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP", "1")
    folder = comm.bcast(str(tmp_path_factory.mktemp("rs")) if comm.Get_rank() == 0 else None)
    topo_files = {}
    if comm.Get_rank() == 0:
        for name, text in (("swapped", SWAPPED), ("eu-only", EU_ONLY)):
            topo_files[name] = os.path.join(folder, f"{name}.toml")
            with open(topo_files[name], "w") as fh:
                fh.write(text)
    topo_files = comm.bcast(topo_files)
    ckpt = os.path.join(folder, "ckpt")
    full = run(comm, load_topology(None, comm),
               _cfg(os.path.join(folder, "full"), balancer="topo", checkpoint_every=4,
                    checkpoint_dir=ckpt))
    restart_from = os.path.join(ckpt, "step-00000004")
    want = read_catalogue(full["output"]["catalogue"]) if comm.Get_rank() == 0 else None

    cases = [("4to2", 2, None, "topo"), ("4to3", 3, None, "greedy"),
             ("swapped", 4, topo_files["swapped"], "static"),
             ("eu-only", 3, topo_files["eu-only"], "topo")]
    for name, n, topo_path, balancer in cases:
        sub = comm.Split(0 if comm.Get_rank() < n else 1, comm.Get_rank())
        if comm.Get_rank() < n:
            topo = load_topology(topo_path, sub)
            rep = run(sub, topo, _cfg(os.path.join(folder, name), balancer=balancer,
                                      restart=restart_from))
            assert [s["step"] for s in rep["steps"]] == [4, 5, 6, 7], name
            assert rep["restarted_from"]["ranks_before"] == 4
            # every tile of the EU class sits only where this topology allows it
            owners = np.array(rep["final_owners"])
            for rec in rep["audit"]:
                assert "eu-personal" not in rec["data_class"] or rec["dst_region"] == "eu-north"
            if sub.Get_rank() == 0:
                got = read_catalogue(rep["output"]["catalogue"])
                np.testing.assert_array_equal(got, want, err_msg=name)
                assert rep["summary"] == full["summary"], name
                assert owners.max() < n
        sub.Free()
        comm.Barrier()


def test_a_topology_without_the_only_region_of_a_class_is_refused_before_reading(tmp_path):
    """Exit 2 and one message, before any data is read (here: even before any is written)."""
    topo = tmp_path / "withdrawn.toml"
    topo.write_text(WITHDRAWN)
    res = run_mpi([sys.executable, "-m", "hpccloud", "run", "--topology", str(topo),
                   "--steps", "2", "--param", "n=64", "--param", "grid=4", "--quiet"], 4, 120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("hpccloud: error:") == 1, res.stderr
    assert "'eu-personal' may live only in ['eu-north']" in res.stderr, res.stderr
    assert "ranks only in ['us-east']" in res.stderr


def test_class_names_with_reserved_characters_are_refused():
    from hpccloud.errors import TopologyError
    from hpccloud.topology import topology_from_text

    text = SWAPPED + '\n[data_classes."eu-personal+public"]\nregions = ["*"]\n'
    with pytest.raises(TopologyError, match="reserved"):
        topology_from_text(text, "t.toml", 4)
    bad_region = SWAPPED.replace('name = "us-east"', 'name = "../../x"')
    with pytest.raises(TopologyError, match="not allowed"):
        topology_from_text(bad_region, "t.toml", 4)


def test_effective_classes_come_only_from_declared_ones():
    from hpccloud.errors import ResidencyError
    from hpccloud.policy import Policy
    from hpccloud.runner.residency import check_held, halo_closed, place_resident
    from hpccloud.topology import topology_from_text
    from hpccloud.workloads import make_workload

    topo = topology_from_text(SWAPPED, "t.toml", 4)
    wl = make_workload("stencil2d", PARAMS)
    m, policy = halo_closed(wl.shard_map(4), topo)
    assert {c for c in m.data_classes() if "+" in c} == {"eu-personal+public"}
    assert policy.allowed_regions("eu-personal+public") == frozenset({"eu-north"})
    placed = place_resident(m, policy)
    for s in placed.shards:
        assert policy.may_live(s.data_class, topo.region_of(s.owner_rank))
    # a rank holding a shard its region may not hold is caught
    eu_tile = next(s.id for s in m.shards if s.data_class.startswith("eu-personal"))
    with pytest.raises(ResidencyError):
        check_held(m.with_owners(np.zeros(len(m), np.int64)), Policy.from_topology(topo), 0,
                   [eu_tile])
