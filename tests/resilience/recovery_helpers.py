"""Helpers for the recovery tests: small runs of the real CLI under mpiexec."""

import json
import os
import sys

import numpy as np

from hpccloud.testing.mpi_pytest import child_env, run_group, run_mpi

#: small enough that a 4-rank launch is a few seconds on a shared 2-core machine
PARAMS = ["--param", "n=96", "--param", "grid=6", "--param", "hot_sweeps=3", "--param", "period=6"]
STEPS = 12


def hpccloud_run(args, nranks, folder, name, *, steps=STEPS, env=None, timeout_s=120):
    """``mpiexec -n N hpccloud run`` (small stencil2d) writing ``folder/name.json`` and ``folder/name/``."""
    argv = [sys.executable, "-m", "hpccloud", "run", "--steps", str(steps), *PARAMS,
            "--rebalance-every", "4", "--quiet", "--json", os.path.join(folder, f"{name}.json"),
            "--output", os.path.join(folder, name), *args]
    return run_mpi(argv, nranks, timeout_s, env=child_env(nranks, env))


def supervised_run(args, nranks, folder, name, *, sup_args=(), steps=STEPS, env=None, timeout_s=150):
    """``hpccloud supervise -- mpiexec -n N python -m hpccloud run ...``."""
    from hpccloud.testing.mpi_pytest import mpiexec_path

    argv = [sys.executable, "-m", "hpccloud", "supervise", "--timeout", str(timeout_s - 10), *sup_args,
            "--", mpiexec_path(), "-n", str(nranks), sys.executable, "-m", "hpccloud", "run",
            "--steps", str(steps), *PARAMS, "--rebalance-every", "4", "--quiet",
            "--json", os.path.join(folder, f"{name}.json"), "--output", os.path.join(folder, name), *args]
    return run_group(argv, timeout_s, env=child_env(nranks, env))


def result(folder, name):
    """``(report, global result array)`` of a run written by :func:`hpccloud_run`."""
    from hpccloud.io.hdf5 import read_catalogue

    with open(os.path.join(folder, f"{name}.json")) as fh:
        rep = json.load(fh)
    return rep, read_catalogue(os.path.join(folder, name, "catalogue.h5"))


def assert_same_result(folder, name, ref):
    rep, arr = result(folder, name)
    want_rep, want = ref
    np.testing.assert_array_equal(arr, want)
    assert rep["summary"] == want_rep["summary"]
    return rep
