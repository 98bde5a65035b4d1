"""A user's own workload: the example package installs with pip, registers its workload and
kernel through entry points, and `hpccloud run --workload logistic` under `mpiexec -n 2`
gives the single-rank result bit for bit."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpccloud.testing.mpi_pytest import child_env, run_mpi

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hpccloud-example-workload"
PARAMS = ["--param", "n=6000", "--param", "shards=8", "--param", "iters=20"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The example installed by pip into a private folder (the shared venv stays as it was);
    processes that put the folder on PYTHONPATH see its entry points like any installed
    package's."""
    target = tmp_path_factory.mktemp("site")
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    res = subprocess.run([*base, "--no-index", "--no-build-isolation", str(EXAMPLE)],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:  # no setuptools/wheel in this venv: let pip build in isolation
        res = subprocess.run([*base, str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (target / "hpccloud_example_workload").is_dir()
    return str(target)


def _env(plugin_path, nranks):
    env = child_env(nranks)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), plugin_path, env.get("PYTHONPATH", "")])
    return env


def test_entry_points_register_workload_and_kernel(plugin_path):
    code = (
        "import numpy as np, kernels\n"
        "from hpccloud.workloads import names, make_workload\n"
        "assert 'logistic' in names(), names()\n"
        "wl = make_workload('logistic', {'n': 100, 'shards': 4})\n"
        "assert type(wl).__module__ == 'hpccloud_example_workload' and wl.name == 'logistic'\n"
        "spec = kernels.get('logistic')\n"
        "args = spec.make_inputs(4096)\n"
        "np.testing.assert_array_equal(spec.kernel(*args), spec.reference(*args))\n"
        "print('ok', spec.work_units(*args))\n")
    res = subprocess.run([sys.executable, "-c", code], env=_env(plugin_path, 1),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["ok", "4096.0"]


def test_unknown_workload_names_the_entry_point_group(plugin_path):
    from hpccloud.errors import InvalidArgument
    from hpccloud.workloads import make_workload

    with pytest.raises(InvalidArgument, match="entry-point group 'hpccloud.workloads'"):
        make_workload("no-such-workload")


def _run(plugin_path, nranks, out, extra=()):
    args = [sys.executable, "-m", "hpccloud", "run", "--workload", "logistic", *PARAMS,
            "--steps", "6", "--rebalance-every", "2", "--balancer", "topo", "--output", str(out),
            *extra]
    res = run_mpi(args, nranks, timeout_s=240, env=_env(plugin_path, nranks), cwd=str(ROOT))
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert f"workload logistic on {nranks} ranks" in res.stdout
    return res


def test_example_workload_two_ranks_equal_one(plugin_path, tmp_path):
    _run(plugin_path, 1, tmp_path / "one")
    _run(plugin_path, 2, tmp_path / "two")
    with h5py.File(tmp_path / "one" / "catalogue.h5") as a, h5py.File(tmp_path / "two" / "catalogue.h5") as b:
        one, two = a["data"][()], b["data"][()]
        assert one.shape == (6000,) and np.isfinite(one).all()
        np.testing.assert_array_equal(two, one)
        # the user's workload gets the same self-describing output as a built-in one
        assert b.attrs["workload"] == "logistic" and b.attrs["param_shards"] == 8
        assert b["data"].dims[0].label == "r" and b["data"].attrs["units"] == "1"
