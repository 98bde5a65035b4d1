"""A checkpoint this run cannot restart from is refused before the job compiles or probes."""

import os
import shutil

import numpy as np
import pytest
from mpi4py import MPI

from hpccloud.comm.topology import load_topology
from hpccloud.errors import HpccloudError
from hpccloud.io.hdf5 import read_catalogue
from hpccloud.runner import RunConfig, run

PARAMS = {"n": 64, "grid": 4, "hot_sweeps": 2, "period": 4}


def _cfg(out, **kw):
    return RunConfig(workload="stencil2d", params=dict(PARAMS), output=out, quiet=True,
                     probe_sizes=(8, 4096), **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("order"))
    run(MPI.COMM_SELF, load_topology(None, MPI.COMM_SELF),
        _cfg(os.path.join(folder, "full"), steps=4, checkpoint_every=2,
             checkpoint_dir=os.path.join(folder, "ckpt")))
    return os.path.join(folder, "ckpt", "step-00000002"), folder


def _no_work(monkeypatch):
    """Compiling or probing anything fails the test: the refusal must come first."""
    def refused_late(*_a, **_k):
        raise AssertionError("the job compiled or probed before refusing the checkpoint")

    import hpccloud.compile
    import hpccloud.measure.probe
    import hpccloud.runner.setup

    monkeypatch.setattr(hpccloud.compile, "warm_up", refused_late)
    monkeypatch.setattr(hpccloud.measure.probe, "probe_transport", refused_late)
    monkeypatch.setattr(hpccloud.runner.setup, "discover_cores", refused_late)
    monkeypatch.setattr(hpccloud.runner.setup, "_links", refused_late)


@pytest.mark.parametrize("case", ["steps", "workload", "tampered"])
def test_restart_refused_before_compile_and_probe(checkpoint, tmp_path, monkeypatch, case):
    path, _ = checkpoint
    cfg = _cfg(str(tmp_path / "out"), steps=6, restart=path)
    if case == "steps":
        cfg.steps, want = 2, "nothing is left to run"  # the checkpoint is of step 2
    elif case == "workload":
        cfg.params, want = {**PARAMS, "n": 80}, "not of this run's 'stencil2d'"
    else:
        tampered = tmp_path / "step-00000002"
        shutil.copytree(path, tampered)
        text = (tampered / "manifest.json").read_text()
        assert '"step": 2' in text
        (tampered / "manifest.json").write_text(text.replace('"step": 2', '"step": 3'))
        cfg.restart, want = str(tampered), "sha256"
    _no_work(monkeypatch)
    with pytest.raises(HpccloudError, match=want):
        run(MPI.COMM_SELF, load_topology(None, MPI.COMM_SELF), cfg)
    assert not os.path.exists(tmp_path / "out")  # nothing written


def test_a_good_checkpoint_still_restarts_to_the_same_result(checkpoint, tmp_path):
    path, folder = checkpoint
    ref = run(MPI.COMM_SELF, load_topology(None, MPI.COMM_SELF),
              _cfg(os.path.join(folder, "ref6"), steps=6))
    got = run(MPI.COMM_SELF, load_topology(None, MPI.COMM_SELF),
              _cfg(str(tmp_path / "out"), steps=6, restart=path))
    assert got["restarted_from"]["step"] == 2 and got["restarted_from"]["seconds"] > 0
    assert [s["step"] for s in got["steps"]] == [2, 3, 4, 5]
    np.testing.assert_array_equal(read_catalogue(got["output"]["catalogue"]),
                                  read_catalogue(ref["output"]["catalogue"]))
