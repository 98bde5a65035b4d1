"""With pytest-mpi installed, no hpccloud MPI test is silently skipped.

pytest-mpi owns the marker ``mpi`` (it skips ``mpi``-marked tests unless
``--with-mpi``); hpccloud's marker is ``hpccloud_mpi``, so the two plugins
cannot claim the same tests. Checked for real: pytest-mpi (the installed one,
or 0.6 installed once into a cache folder with pip) loaded into a child pytest
that collects and runs hpccloud's MPI tests with and without ``--with-mpi``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGET = "tests/test_topology_mpi.py"
PYTEST_MPI = "pytest-mpi==0.6"


@pytest.fixture(scope="module")
def pytest_mpi_env():
    """Environment whose Python imports pytest_mpi (and autoloads it as a plugin)."""
    env = dict(os.environ)
    env.pop("HPCCLOUD_MPI_CHILD", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if importlib.util.find_spec("pytest_mpi") is not None:
        return env
    cache = Path(os.environ.get("HPCCLOUD_CACHE", Path.home() / ".cache" / "hpccloud"))
    target = cache / PYTEST_MPI.replace("==", "-")
    if not (target / "pytest_mpi").is_dir():
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(target), PYTEST_MPI],
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            msg = f"NOT RUN: could not pip install {PYTEST_MPI}: {res.stderr[-500:]}"
            warnings.warn(msg, UserWarning, stacklevel=1)
            pytest.skip(msg)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + str(target) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _pytest(env, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "pytest_mpi", "-p",
                           "no:cacheprovider", "-o", "addopts=", "-rs", *args],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=timeout_s)


def test_pytest_mpi_is_loaded_and_collects_every_mpi_test(pytest_mpi_env):
    res = _pytest(pytest_mpi_env, "--collect-only", "-q", TARGET)
    assert res.returncode == 0, res.stdout + res.stderr
    ids = [ln for ln in res.stdout.splitlines() if "::" in ln]
    assert len(ids) == 6 and all(re.search(r"\[np\d\]$", i) for i in ids), res.stdout
    # pytest-mpi really is active in that session: its option exists
    helptext = _pytest(pytest_mpi_env, "--help").stdout
    assert "--with-mpi" in helptext


@pytest.mark.parametrize("flag", [[], ["--with-mpi"]], ids=["plain", "with-mpi"])
def test_mpi_tests_run_not_skipped_with_pytest_mpi(pytest_mpi_env, flag):
    res = _pytest(pytest_mpi_env, *flag, "-k", "np2", TARGET)
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert re.search(r"\b2 passed\b", tail) and "skipped" not in tail, res.stdout[-3000:]
