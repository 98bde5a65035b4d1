"""`hpccloud run` refuses bad targets and machine limits before any work: exit 2, one message."""

import os
import sys
import time

import pytest

from hpccloud.testing.mpi_pytest import child_env, run_mpi

HPCCLOUD = [sys.executable, "-m", "hpccloud", "run", "--steps", "2", "--quiet"]


def _refused(res, match):
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("hpccloud: error")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    assert match in errors[0] and "Fix:" in errors[0], errors[0]


@pytest.mark.parametrize("case", ["output-is-file", "json-is-folder", "too-big"])
def test_refused_before_work(tmp_path, case):
    (tmp_path / "afile").write_text("x")
    args, match = {
        "output-is-file": (["--output", str(tmp_path / "afile")], "is a file, not a folder"),
        "json-is-folder": (["--json", str(tmp_path)], "is a folder"),
        "too-big": (["--param", "n=120000"], "would need about"),
    }[case]
    t0 = time.perf_counter()
    res = run_mpi([*HPCCLOUD, *args], 2, 180, env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, match)
    assert "initial placement" not in res.stdout  # no probe ran, nothing was allocated
    assert time.perf_counter() - t0 < 120
