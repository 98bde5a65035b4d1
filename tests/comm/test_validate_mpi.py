"""The up-front validation pass under mpiexec: one error, the same on every rank, before any work."""

import os
from types import SimpleNamespace

import h5py
import pytest

from hpccloud.comm.validate import publish_output, validate_run
from hpccloud.errors import ConfigError
from hpccloud.io.publish import verify_output
from hpccloud.workloads import make_workload


def _folder(comm, factory):
    return comm.bcast(str(factory.mktemp("v")) if comm.Get_rank() == 0 else None)


def _cfg(**kw):
    base = dict(output=None, checkpoint_dir=None, checkpoint_every=0, plots=None, json=None,
                audit=None, trace=None, input=None, input_dataset="data", overwrite=False, steps=4)
    base.update(kw)
    return SimpleNamespace(**base)


def _refused(comm, cfg, workload, match):
    with pytest.raises(ConfigError) as info:
        validate_run(comm, cfg, workload)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1, messages
    assert getattr(info.value, "collective", False) or comm.Get_size() == 1
    assert match in messages[0] and "Fix:" in messages[0], messages[0]


@pytest.mark.hpccloud_mpi(ranks=[1, 2], timeout=120)
def test_bad_targets_refused_everywhere(comm, tmp_path_factory):
    d = _folder(comm, tmp_path_factory)
    wl = make_workload("stencil2d", {"n": 64, "grid": 4})
    if comm.Get_rank() == 0:
        open(os.path.join(d, "afile"), "w").close()
    comm.Barrier()
    _refused(comm, _cfg(output=os.path.join(d, "afile")), wl, "is a file, not a folder")
    _refused(comm, _cfg(json=d), wl, "--json")
    _refused(comm, _cfg(checkpoint_dir=os.path.join(d, "afile")), wl, "--checkpoint-dir")
    _refused(comm, _cfg(plots=os.path.join(d, "afile", "p")), wl, "--plots")
    big = make_workload("stencil2d", {"n": 1 << 20, "grid": 8})
    _refused(comm, _cfg(), big, "would need about")


@pytest.mark.hpccloud_mpi(ranks=[1, 2], timeout=120)
def test_input_checked_and_output_published(comm, tmp_path_factory):
    d = _folder(comm, tmp_path_factory)
    wl = make_workload("stencil2d", {"n": 64, "grid": 4})
    bad = os.path.join(d, "in.h5")
    if comm.Get_rank() == 0:
        with h5py.File(bad, "w") as f:
            f.create_group("data")
    comm.Barrier()
    _refused(comm, _cfg(input=bad), wl, "'data' is a group, not a dataset")
    out = os.path.join(d, "out")
    claims = validate_run(comm, _cfg(output=out, checkpoint_dir=os.path.join(d, "ck"),
                                     checkpoint_every=2), wl)
    # a second job on the same folders is refused while this one holds them
    _refused(comm, _cfg(output=out), wl, "in use by another hpccloud job")
    if comm.Get_rank() == 0:
        with h5py.File(os.path.join(out, "r.h5"), "w") as f:
            f.attrs["run_id"] = claims.run_id
            f.attrs["step"] = 4
    publish_output(comm, claims, out, 4, [os.path.join(out, "r.h5")])
    claims.release()
    if comm.Get_rank() == 0:
        assert verify_output(out)["run_id"] == claims.run_id
    comm.Barrier()
    _refused(comm, _cfg(output=out), wl, f"holds the results of run {claims.run_id}")
